"""The Vault adapter: authentication, token renewal, KV v2 reads and writes (hvac stays inside)."""

from .client import KvMetadata, TokenState, VaultClient, token_action

__all__ = ["KvMetadata", "TokenState", "VaultClient", "token_action"]
