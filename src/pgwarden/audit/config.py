"""``audit:`` in ``pgwarden.yaml``: where the journal lives, how hard it is flushed, what leaves the host.

:class:`AuditSettings` is strict (unknown keys are refused, instances are frozen) because a
misspelt ``on_journal_failure`` must never silently turn fail-closed into fail-open. The
engine's configuration embeds it unchanged under ``audit:``; nothing here reads a file or the
environment — the recorder does that when it starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AuditSettings"]


class AuditSettings(BaseModel):
    """The audit trail: local hash-chained journal and optional OTLP export."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    journal_enabled: bool = Field(
        default=True,
        description="write the local tamper-evident journal; turning it off leaves no local record at all "
        "(only for benchmarks and throwaway setups)",
    )
    journal_dir: Path = Field(
        default=Path("pgwarden-journal"),
        description="directory holding journal-NNNNNN.jsonl, journal.head and journal.pub (created if missing)",
    )
    fsync: Literal["each", "batch"] = Field(
        default="each",
        description="'each': every record is fsynced before the statement's result is released (survives "
        "power loss); 'batch': records are written to the OS at once (survive a killed process) but "
        "fsynced at most every fsync_batch_interval_ms, so a power loss or kernel crash can lose that "
        "much of the tail",
    )
    fsync_batch_interval_ms: int = Field(
        default=50, gt=0, le=60_000, description="longest time a record waits for fsync in 'batch' mode"
    )
    rotate_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=4096,
        description="start a new journal file once the current one would grow past this many bytes "
        "(the hash chain continues across files)",
    )
    checkpoint_every: int = Field(
        default=1000, ge=1, description="write a signed checkpoint after this many records"
    )
    checkpoint_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="write a signed checkpoint at least this often while records arrive; records after "
        "the last checkpoint can be cut from the tail without a trace, so this bounds that window",
    )
    signing_key_file: Path | None = Field(
        default=None,
        description="Ed25519 private key (PKCS#8 PEM) signing checkpoints; generated with mode 0600 when "
        "missing. Default: <journal_dir>/journal.key. Keep it where the journal's readers cannot write",
    )
    on_journal_failure: Literal["refuse", "continue"] = Field(
        default="refuse",
        description="'refuse': a statement whose record cannot be written fails with journal_unavailable "
        "and its result is not released; 'continue': the statement proceeds, the choice is recorded on "
        "the span sent by OTLP and logged",
    )
    sample_rows: int = Field(
        default=20, ge=0, le=10_000, description="rows of the (already masked) result kept as a sample"
    )
    sample_value_max_length: int = Field(
        default=256, ge=1, description="longest sample value kept, in characters (longer ones are cut)"
    )
    otlp_enabled: bool = Field(default=False, description="export spans with OTLP/HTTP (protobuf)")
    otlp_endpoint: str | None = Field(
        default=None,
        description="full URL of the traces endpoint, e.g. http://collector:4318/v1/traces; default: the "
        "standard OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT variables",
    )
    otlp_headers_env: str | None = Field(
        default=None,
        description="name of an environment variable holding export headers as 'k=v,k2=v2' (secrets are "
        "never inline); OTEL_EXPORTER_OTLP_HEADERS is honoured as well",
    )
    otlp_text: Literal["full", "sanitised"] = Field(
        default="sanitised",
        description="statement text sent by OTLP: 'full' (already redacted) or 'sanitised' (every literal "
        "replaced by a $n placeholder; texts that do not parse are dropped)",
    )
    otlp_sample: bool = Field(
        default=False, description="send the masked result sample by OTLP too (it always stays in the journal)"
    )
    otlp_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="timeout of one OTLP export request, in seconds"
    )

    def key_path(self) -> Path:
        return self.signing_key_file if self.signing_key_file is not None else self.journal_dir / "journal.key"
