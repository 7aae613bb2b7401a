"""`regwarden demo`: a self-contained sandbox (OpenBao, a registry, a private dockerd) and the daemon
running on it in the foreground, so that a newcomer watches rotation, apply, audit, probes and alerts."""

__all__: list[str] = []
