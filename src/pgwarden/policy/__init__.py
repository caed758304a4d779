"""The policy core: facts in, verdict out. Pure and deterministic — no I/O anywhere in this package.

What the doors and the engine may use (everything else is private to the package):

* the language — :class:`PolicyDocument`, :class:`Rule`, :class:`ColumnMask`, :class:`SecretRef`,
  :class:`MaskStrategy` (``language``);
* the catalog snapshot — :class:`Catalog`, :func:`builtin_catalog` (``catalog``);
* analysis — :func:`analyse`, :class:`SessionFacts` (``sql``), the contract in ``analysis``;
* the decision — :class:`Decider` (``decision``), :class:`Verdict`, :class:`Decision`,
  :class:`StatementPlan`, :class:`PinnedSettings` (``verdict``), :class:`StatementEffects` (``effects``),
  :class:`ReasonCode` and :func:`sqlstate_for` (``reasons``);
* masking and screening — :func:`make_masker`, :func:`derive_mask_key` (``masking``), :class:`Detector`
  (``detectors``), :class:`ResultScreen`, :class:`ColumnInfo`, :class:`ResultShapeMismatch`,
  :func:`screen_error_fields` (``results``).
"""

from pgwarden._face import face

__all__ = [
    "Catalog", "ColumnInfo", "ColumnMask", "Decider", "Decision", "Detector", "MaskStrategy", "PinnedSettings",
    "PolicyDocument", "ReasonCode", "ResultScreen", "ResultShapeMismatch", "Rule", "SecretRef", "SessionFacts",
    "StatementEffects", "StatementPlan", "Verdict", "analyse", "builtin_catalog", "derive_mask_key",
    "make_masker", "screen_error_fields", "sqlstate_for",
]

__getattr__, __dir__ = face(__name__, {
    "PolicyDocument": ".language", "Rule": ".language", "ColumnMask": ".language", "SecretRef": ".language",
    "MaskStrategy": ".language", "Catalog": ".catalog", "builtin_catalog": ".catalog", "analyse": ".sql",
    "SessionFacts": ".sql", "Decider": ".decision", "Verdict": ".verdict", "Decision": ".verdict",
    "StatementPlan": ".verdict", "PinnedSettings": ".verdict", "StatementEffects": ".effects",
    "ReasonCode": ".reasons", "sqlstate_for": ".reasons", "make_masker": ".masking",
    "derive_mask_key": ".masking", "Detector": ".detectors", "ResultScreen": ".results",
    "ColumnInfo": ".results", "ResultShapeMismatch": ".results", "screen_error_fields": ".results",
})
