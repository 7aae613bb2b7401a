"""regwarden: registry credentials from Vault, audit trail, probes and alerts for Docker hosts."""

__version__ = "0.1.0.dev0"

__all__ = ["__version__"]
