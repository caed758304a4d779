"""SQL analysis with PostgreSQL's own parser (pglast): the facts a decision is made from.

The face of the analyser. :func:`analyse` turns a text into an
:class:`~pgwarden.policy.analysis.Analysis` (statement classes, relations and functions with
their access, column lineage of every output, nested statements, effects on the session);
:class:`SessionFacts` carries what the session knows that the text does not (prepared
statements, cursors). :func:`shape_key` is pg_query's normalisation, for the verdict cache of
the same statement with other literals. The rewrite that substitutes masked values inside the
statement (:class:`RewritePlanner`, :func:`apply`, :func:`splices_for`, :func:`client_position`)
is SQL work too and lives here, with its templates for the shape cache (:func:`splice_template`,
:func:`resplice`). Everything else in this package is private to it.
"""

from ._analyser import NO_SESSION, SessionFacts, analyse, shape_key
from ._rewrite import (
    RewriteError,
    RewritePlanner,
    SpliceTemplate,
    apply,
    client_position,
    resplice,
    splice_template,
    splices_for,
    without_keys,
)

__all__ = ["NO_SESSION", "RewriteError", "RewritePlanner", "SessionFacts", "SpliceTemplate", "analyse", "apply",
           "client_position", "resplice", "shape_key", "splice_template", "splices_for", "without_keys"]
