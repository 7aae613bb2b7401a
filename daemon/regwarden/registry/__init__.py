"""Talking to registries on behalf of credentials: verifying a credential version before it is applied."""
