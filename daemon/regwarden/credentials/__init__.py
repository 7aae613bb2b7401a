"""Credentials: watch Vault, verify against the registry, apply to Docker, rotate."""
