"""The one error tree of regwarden.

Vendor exceptions (hvac, docker, requests, sqlite3) are translated into these inside the adapter that
calls the vendor; nothing outside an adapter catches a vendor exception. Errors carry data, and their
messages never contain a secret.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AuditError",
    "ConfigError",
    "ConfigProblem",
    "CredentialError",
    "DockerError",
    "ImageCheckError",
    "ProviderError",
    "RegistryError",
    "RegwardenError",
    "SinkError",
    "SinkMisconfigured",
    "StateError",
    "VaultError",
]


class RegwardenError(Exception):
    """Base of every error regwarden raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a config file: where it is and what is wrong."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.key or '(top level)'}: {self.message}"


class ConfigError(RegwardenError):
    """The configuration is invalid; carries every problem found, in file order."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class StateError(RegwardenError):
    """The SQLite state store cannot be opened or written."""


class VaultError(RegwardenError):
    """Vault answered with an error or could not be reached."""

    def __init__(self, message: str, *, retryable: bool = True, status: int | None = None) -> None:
        self.retryable = retryable
        self.status = status
        super().__init__(message)


class DockerError(RegwardenError):
    """The Docker engine or a Docker client config could not be read or written."""


class RegistryError(RegwardenError):
    """A registry refused or failed a request."""

    def __init__(self, message: str, *, phase: str = "", status: int | None = None) -> None:
        self.phase = phase
        self.status = status
        super().__init__(message)


class CredentialError(RegwardenError):
    """A credential could not be verified, applied or rotated."""


class ProviderError(CredentialError):
    """A credential provider failed to create or revoke a credential."""


class ImageCheckError(RegwardenError):
    """A pushed image could not be checked: a registry answer, signature or scanner report is not what it claims.

    `reason` is the metric label (timeout, exit_status, output_too_large, not_startable, bad_report, bad_signature)."""

    def __init__(self, message: str, *, reason: str = "bad_input") -> None:
        super().__init__(message)
        self.reason = reason


class AuditError(RegwardenError):
    """The audit trail cannot be written, or a verification found a broken record.

    `not_written`: from a batch append, how many of its last records were not taken."""

    def __init__(self, message: str, *, not_written: int = 0) -> None:
        super().__init__(message)
        self.not_written = not_written


class SinkError(RegwardenError):
    """A sink failed to deliver; `retryable` says whether the core should try again."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        self.retryable = retryable
        super().__init__(message)


class SinkMisconfigured(SinkError):
    """A sink's configuration cannot work (bad URL, missing secret): permanent."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)
