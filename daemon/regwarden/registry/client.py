"""Read manifests and blobs from a registry with a configured credential (basic, or a Bearer token
from the realm of the registry's `WWW-Authenticate` challenge, as `verify` obtains it).

`RegistryError` when the registry cannot be reached or answers something unexpected; a 404 is
`None`, not an error (for the referrers API also the 400, 405 and 501 that registries without it
answer). Credentials never appear in messages.
"""

from __future__ import annotations

from typing import Any

import requests

from ..config import RegistryConfig
from ..credentials.model import CredentialSecret
from ..errors import RegistryError
from .verify import _fetch_token, _send, _unexpected, parse_challenge

__all__ = ["MANIFEST_ACCEPT", "RegistryReader"]

_ABSENT = frozenset({404})
# The OCI distribution spec says a registry without the referrers API answers 404; registries in the field
# also answer 400 (unsupported path), 405 (method not allowed on an unknown route) or 501. Each means: look
# at the fallback tag instead.
_NO_REFERRERS_API = frozenset({400, 404, 405, 501})

MANIFEST_ACCEPT = ", ".join((
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json"))


class RegistryReader:
    """GETs on one registry; a Bearer token is fetched on the first 401 and kept per scope."""

    def __init__(self, registry: RegistryConfig, secret: CredentialSecret | None, *, timeout: float,
                 max_bytes: int = 4 * 1024 * 1024) -> None:
        self._registry = registry
        self._secret = secret if secret is not None and secret.kind != "certificate" else None
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._session = requests.Session()
        self._session.verify = str(registry.ca_cert) if registry.ca_cert else True
        self._tokens: dict[str, str] = {}

    def close(self) -> None:
        self._session.close()

    def manifest(self, repository: str, reference: str) -> bytes | None:
        return self._get(f"/v2/{repository}/manifests/{reference}", repository, {"Accept": MANIFEST_ACCEPT})

    def blob(self, repository: str, digest: str) -> bytes | None:
        return self._get(f"/v2/{repository}/blobs/{digest}", repository, {})

    def referrers(self, repository: str, digest: str) -> bytes | None:
        """The OCI 1.1 referrers index of `digest`; None where the registry has no referrers API."""
        return self._get(f"/v2/{repository}/referrers/{digest}", repository,
                         {"Accept": "application/vnd.oci.image.index.v1+json"}, absent=_NO_REFERRERS_API)

    def _get(self, path: str, repository: str, headers: dict[str, str],
             absent: frozenset[int] = _ABSENT) -> bytes | None:
        url = f"{self._registry.url}{path}"
        scope = f"repository:{repository}:pull"
        token = self._tokens.get(scope)
        answer = self._send(url, headers, token)
        if answer.status_code == 401 and self._secret is not None:
            challenge = parse_challenge(answer.headers.get("WWW-Authenticate", ""))
            if challenge is not None and challenge.scheme == "bearer":
                token, _ = _fetch_token(self._session, self._registry, self._secret, challenge, self._timeout)
                self._tokens[scope] = token
                answer = self._send(url, headers, token)
        if answer.status_code in absent:
            return None
        if answer.status_code != 200:
            raise _unexpected(self._registry, "read", answer)
        body = answer.content
        if len(body) > self._max_bytes:
            raise RegistryError(f"registry {self._registry.name}: {path} is larger than {self._max_bytes} bytes",
                                phase="read", status=200)
        return body

    def _send(self, url: str, headers: dict[str, str], token: str | None) -> requests.Response:
        kwargs: dict[str, Any] = {"headers": dict(headers)}
        if token is not None:
            kwargs["headers"]["Authorization"] = f"Bearer {token}"
        elif self._secret is not None and not self._secret.is_identity_token:
            assert self._secret.username is not None and self._secret.password is not None
            kwargs["auth"] = (self._secret.username, self._secret.password)
        return _send(self._session, "GET", url, self._timeout, phase="read", **kwargs)
