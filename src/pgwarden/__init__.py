"""pgwarden: a governed door between AI coding agents and PostgreSQL.

The project is laid out as the design card's packages, under the ``pgwarden``
namespace so that generic names such as ``policy`` or ``engine`` never collide
with other distributions in a user's environment:

``pgwarden.policy``  the policy language, SQL analysis, decisions, masking (pure, no I/O)
``pgwarden.audit``   the audit record schema and, later, the journal and exporters
``pgwarden.engine``  configuration, identity, catalog loading, sessions, the CLI
"""

__version__ = "0.1.0"
