"""Authentication scan of one endpoint: what it grants to anyone, and to well-known default logins.

Every request carries `USER_AGENT`, unique to this process, so that the auth-failure detector can tell
regwarden's own default-credential attempts from an attack (and an attacker cannot borrow the name). No
request ever carries a credential regwarden manages; TLS is not verified here (the TLS scan judges it) —
default passwords are public, and nothing else is sent. A push test starts a blob upload and cancels it
at once: nothing is written to the registry.
"""

from __future__ import annotations

import secrets
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import requests
from urllib3.exceptions import InsecureRequestWarning

from .. import __version__
from ..probe.model import Challenge, parse_challenges
from .checks import AuthScan

__all__ = ["DEFAULT_CREDENTIALS", "USER_AGENT", "is_own_attempt", "scan_auth"]

USER_AGENT = f"regwarden-posture/{__version__} ({secrets.token_hex(8)})"

# the documented list (docs/posture.md): product defaults and the distribution docs' example
DEFAULT_CREDENTIALS: tuple[tuple[str, str], ...] = (
    ("admin", "admin"),
    ("admin", "Harbor12345"),
    ("docker", "docker"),
    ("registry", "registry"),
    ("testuser", "testpassword"),
)


_Attempt = Callable[[str | None], bool | None]


def is_own_attempt(agent: str | None) -> bool:
    """Whether a registry request came from this process's posture scan (by its User-Agent)."""
    return agent == USER_AGENT


@dataclass
class _Scan:
    base: str
    repository: str
    timeout: float
    session: requests.Session = field(default_factory=requests.Session)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.verify = False
        self.session.trust_env = False  # no proxy settings or .netrc credentials of the service user

    def get(self, url: str, **kwargs: object) -> requests.Response:
        return self.session.get(urljoin(self.base, url), timeout=self.timeout, allow_redirects=False,
                                **kwargs)  # type: ignore[arg-type]

    def token(self, challenge: Challenge, scope: str, auth: tuple[str, str] | None = None) -> str | None:
        """A token from the realm for `scope`, or None when refused."""
        params = {"scope": scope}
        if service := challenge.params.get("service"):
            params["service"] = service
        answer = self.session.get(challenge.params["realm"], params=params, auth=auth, timeout=self.timeout,
                                  allow_redirects=False)
        if answer.status_code != 200:
            return None
        try:
            body = answer.json()
        except ValueError:
            self.errors.append("token: the realm answered 200 with a body that is not JSON")
            return None
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        return token if isinstance(token, str) and token else None


def scan_auth(url: str, *, repository: str, timeout: float,
              default_pairs: Sequence[tuple[str, str]] = ()) -> AuthScan:
    """Scan the registry at `url` (its base URL). `default_pairs`: the default logins to try this run."""
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}/"
    scan = _Scan(base, repository, timeout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureRequestWarning)
        try:
            return _run(scan, https=parts.scheme == "https", host=parts.netloc, default_pairs=default_pairs)
        except requests.RequestException as exc:
            return AuthScan(error=f"auth scan failed: {type(exc).__name__}", https=parts.scheme == "https",
                            registry_host=parts.netloc)
        finally:
            scan.session.close()


def _run(scan: _Scan, *, https: bool, host: str, default_pairs: Sequence[tuple[str, str]]) -> AuthScan:
    answer = scan.get("v2/")
    challenges = parse_challenges(answer.headers.get("WWW-Authenticate", ""))
    schemes = tuple(c.scheme for c in challenges)
    bearer = next((c for c in challenges if c.scheme == "bearer" and c.params.get("realm")), None)
    if answer.status_code == 200:
        opened = True
    elif answer.status_code == 401:
        opened = False
    else:
        return AuthScan(error=f"/v2/ answered HTTP {answer.status_code} without credentials", https=https,
                        v2_status=answer.status_code, schemes=schemes, registry_host=host)
    repo = scan.repository
    pull = True if opened else _granted(scan, bearer, f"repository:{repo}:pull",
                                        lambda token: _tags(scan, token))
    push = _granted(scan, bearer, f"repository:{repo}:pull,push", lambda token: _push(scan, token))
    catalog = _granted(scan, bearer, "registry:catalog:*", lambda token: _catalog(scan, token))
    default_user, attempts = None, 0
    if not opened:
        for username, password in default_pairs:
            attempts += 1
            if _login(scan, bearer, username, password):
                default_user = username
                break
    return AuthScan(https=https, v2_status=answer.status_code, open=opened, schemes=schemes,
                    realm=bearer.params["realm"] if bearer else None, registry_host=host,
                    anonymous_pull=pull, anonymous_push=push, catalog_open=catalog,
                    default_checked=bool(default_pairs) and not opened, default_user=default_user,
                    default_attempts=attempts, errors=tuple(scan.errors))


def _granted(scan: _Scan, bearer: Challenge | None, scope: str, attempt: _Attempt) -> bool | None:
    """Run `attempt` anonymously (with an anonymous token where the registry uses them)."""
    token = None
    if bearer is not None:
        token = scan.token(bearer, scope)
        if token is None:
            return False
    return attempt(token)


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _tags(scan: _Scan, token: str | None) -> bool | None:
    answer = scan.get(f"v2/{scan.repository}/tags/list", headers=_headers(token))
    return answer.status_code not in (401, 403)  # 200, or 404 NAME_UNKNOWN: the request was authorised


def _push(scan: _Scan, token: str | None) -> bool | None:
    answer = scan.session.post(urljoin(scan.base, f"v2/{scan.repository}/blobs/uploads/"), headers=_headers(token),
                               timeout=scan.timeout, allow_redirects=False)
    if answer.status_code != 202:
        return False  # 401/403 refused; 405 read-only; 404: no such route
    location = answer.headers.get("Location")
    if location:  # cancel the upload: the registry keeps nothing
        cancel = scan.session.delete(urljoin(scan.base, location), headers=_headers(token), timeout=scan.timeout,
                                     allow_redirects=False)
        if cancel.status_code not in (204, 404):
            scan.errors.append(f"anonymous_push: cancelling the test upload answered HTTP {cancel.status_code}")
    return True


def _catalog(scan: _Scan, token: str | None) -> bool | None:
    answer = scan.get("v2/_catalog?n=1", headers=_headers(token))
    if answer.status_code == 200:
        return True
    if answer.status_code in (401, 403, 404):
        return False
    scan.errors.append(f"catalog_anonymous: /v2/_catalog answered HTTP {answer.status_code}")
    return None


def _login(scan: _Scan, bearer: Challenge | None, username: str, password: str) -> bool:
    if bearer is not None:
        return scan.token(bearer, f"repository:{scan.repository}:pull", auth=(username, password)) is not None
    return scan.get("v2/", auth=(username, password)).status_code == 200
