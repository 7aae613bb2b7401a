"""Pure decisions of the Vault adapter: when to renew or log in, how vendor errors are reported."""

from __future__ import annotations

import hvac.exceptions
import pytest
import requests

from regwarden.vault.client import TokenState, token_action, translate_error


def state(ttl: float, *, renewable: bool = True, capped: bool = False, at: float = 1000.0) -> TokenState:
    return TokenState(obtained_at=at, ttl=ttl, renewable=renewable, granted=ttl, capped=capped)


@pytest.mark.parametrize(
    ("token", "now", "expected"),
    [
        (None, 1000.0, "login"),
        (state(0), 10**9, "none"),  # a token without TTL (root) never needs renewal
        (state(90), 1000.0, "none"),
        (state(90), 1059.9, "none"),  # just before 2/3 of the TTL
        (state(90), 1060.0, "renew"),  # at 2/3 of the TTL
        (state(90, renewable=False), 1060.0, "login"),
        (state(90, capped=True), 1060.0, "login"),  # the last renewal hit max TTL: renewing gains nothing
        (state(90), 1200.0, "renew"),  # already expired: renewal is tried, refused, then login
    ],
)
def test_token_action(token: TokenState | None, now: float, expected: str) -> None:
    """The token is renewed at 2/3 of its TTL and re-obtained when renewal cannot extend it."""
    assert token_action(token, now) == expected


@pytest.mark.parametrize(("granted", "ttl", "capped"), [(60, 60, False), (60, 55, False), (60, 40, True)])
def test_renewal_capped_by_max_ttl(granted: float, ttl: float, capped: bool) -> None:
    """A renewal that grants clearly less than the login TTL is recognised as capped by max TTL."""
    renewed = TokenState(0, granted, True, granted).renewed(10, ttl, True)
    assert (renewed.capped, renewed.expires_at) == (capped, 10 + ttl)


@pytest.mark.parametrize(
    ("exc", "status", "retryable"),
    [
        (hvac.exceptions.InvalidRequest(errors=["check-and-set parameter did not match"]), 400, False),
        (hvac.exceptions.Forbidden(errors=["permission denied"]), 403, False),
        (hvac.exceptions.InvalidPath(), 404, False),
        (hvac.exceptions.RateLimitExceeded(), 429, True),
        (hvac.exceptions.InternalServerError(), 500, True),
        (hvac.exceptions.VaultDown(errors=["Vault is sealed"]), 503, True),
        (hvac.exceptions.UnexpectedError(), None, True),
        (requests.exceptions.ConnectionError("refused"), None, True),
        (requests.exceptions.ReadTimeout("slow"), None, True),
        (requests.exceptions.SSLError("bad cert"), None, True),
        (ValueError("Expecting value"), None, True),
    ],
)
def test_translate_error_status_and_retryable(exc: Exception, status: int | None, retryable: bool) -> None:
    """Every vendor exception becomes a VaultError with the HTTP status and whether retrying can help."""
    err = translate_error("read_metadata", "secret/x", exc)
    assert (err.status, err.retryable) == (status, retryable)
    assert str(err).startswith("Vault read_metadata secret/x:")


def test_translate_error_keeps_request_data_out() -> None:
    """Response text, request URLs and payloads that hvac carries never reach the message."""
    canary = "s3cr3t-canary-value"
    exc = hvac.exceptions.InvalidRequest(
        "bad", method="post", url=f"http://vault/v1/auth/approle/login?x={canary}",
        text=f'{{"secret_id": "{canary}"}}', json={"secret_id": canary})
    ssl = requests.exceptions.SSLError(f"certificate for {canary} failed")
    for err in (translate_error("login", "", exc), translate_error("login", "", ssl)):
        assert canary not in str(err)
