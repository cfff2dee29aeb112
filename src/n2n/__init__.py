"""n2n: network-to-network compression by policy-gradient reinforcement learning."""
__version__ = "0.1.0"

from .errors import CheckpointError, ConfigError, DataError, ModelError, N2NError  # noqa: E402
