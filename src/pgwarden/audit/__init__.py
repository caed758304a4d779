"""The audit trail: OpenTelemetry spans as the record of who asked for what and what policy decided.

This package records; it never decides. ``schema`` names the spans and their
attributes (OpenTelemetry semantic conventions where they exist, ``pgwarden.*``
where they do not) and turns an engine verdict into statement-span attributes.
The hash-chained journal, OTLP export and the review / verify / replay commands
come with the audit issue and build on these names.
"""
