"""The gateway's configuration file, ``pgwarden.yaml``, as strict typed models.

``models`` holds :class:`GatewayConfig` and its sections — ``targets``, ``identity``, the policy
keys ``rules`` and ``masking`` (whose models live in :mod:`pgwarden.policy.language`), and the
sections of the approval broker, the audit trail and the two doors; ``_load`` reads YAML strictly
(duplicate keys refused) and turns pydantic's errors into one :class:`ConfigError` listing every
problem as ``<key path>: <what was expected> (got <value>)``; ``_errors`` formats them. Secrets are
only referenced (env var or file) and read later by :mod:`pgwarden.engine.secrets`.
"""

from ._errors import ConfigError, ConfigProblem
from ._load import config_json_schema, load_config, parse_config
from .models import (
    SUPPORTED_ALGORITHMS,
    DurationMs,
    GatewayConfig,
    Identity,
    ProxySettings,
    ServeSettings,
    ServiceUser,
    Target,
)

__all__ = [
    "SUPPORTED_ALGORITHMS", "ConfigError", "ConfigProblem", "DurationMs", "GatewayConfig", "Identity",
    "ProxySettings", "ServeSettings", "ServiceUser", "Target", "config_json_schema", "load_config",
    "parse_config",
]
