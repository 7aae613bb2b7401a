"""The daemon's one Vault client, shared by every component that talks to Vault (one login, one token)."""

from __future__ import annotations

from ..component import Context
from ..errors import ConfigError, ConfigProblem
from .client import VaultClient

__all__ = ["vault_for"]


def vault_for(ctx: Context) -> VaultClient:
    """The shared VaultClient for this daemon's `[vault]` config."""
    cfg = ctx.config.vault
    if cfg is None:
        raise ConfigError([ConfigProblem("<config>", None, "vault", "this feature needs a [vault] table")])
    client: VaultClient = ctx.shared_instance(f"vault:{cfg.model_dump_json()}", lambda: VaultClient(cfg, ctx.metrics))
    return client
