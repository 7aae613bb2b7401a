"""Pure rules of rotation: when it is due, who may take the lock, which slot is next, provider answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from regwarden.config import CredentialConfig
from regwarden.errors import ProviderError
from regwarden.rotation.lock import LockState, lock_free_for
from regwarden.rotation.providers import command_request, htpasswd_lines_with, next_slot, parse_command_answer
from regwarden.rotation.schedule import next_due

T0 = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)


def _cred(**kw: object) -> CredentialConfig:
    base: dict[str, object] = {"name": "c", "vault_path": "secret/c", "provider": "htpasswd",
                               "htpasswd": {"file": "/tmp/h", "usernames": ["a", "b"]}}
    return CredentialConfig.model_validate({**base, **kw})


@pytest.mark.parametrize(("kw", "rotated_at", "due"), [
    ({"rotate_every": "24h"}, None, datetime.fromtimestamp(0, UTC)),
    ({"rotate_every": "24h"}, T0, T0 + timedelta(hours=24)),
    ({"rotate_cron": "0 3 * * *"}, T0, T0 + timedelta(days=1)),
    ({"rotate_cron": "30 * * * *"}, T0, T0 + timedelta(minutes=30)),
])
def test_next_due(kw: dict[str, object], rotated_at: datetime | None, due: datetime) -> None:
    """Never rotated means due now; otherwise the schedule counts from the last rotation in Vault."""
    assert next_due(_cred(**kw), rotated_at) == due


def test_certificates_are_due_at_a_fraction_of_their_lifetime() -> None:
    """vault-pki credentials rotate at renew_at of the current certificate's lifetime, without a schedule."""
    cred = CredentialConfig.model_validate({"name": "c", "vault_path": "secret/c", "provider": "vault-pki",
                                            "pki": {"role": "r", "common_name": "x", "renew_at": 0.5}})
    assert cred.rotates
    assert next_due(cred, T0, (T0, T0 + timedelta(hours=10))) == T0 + timedelta(hours=5)


@pytest.mark.parametrize(("state", "holder", "free"), [
    (None, "me", True),
    (LockState("", "", "", 0), "me", True),
    (LockState("other", "h2", "r", 2000.0), "me", False),
    (LockState("other", "h2", "r", 999.0), "me", True),  # expired: stale lock is taken over
    (LockState("me", "h1", "r", 2000.0), "me", True),  # our own lock after a restart
])
def test_lock_free_for(state: LockState | None, holder: str, free: bool) -> None:
    """A lock is free when absent, released, expired, or our own."""
    assert lock_free_for(state, holder, now=1000.0) is free


def test_mangled_lock_entry_is_free() -> None:
    """A lock entry that is not what regwarden writes does not block rotation forever."""
    assert lock_free_for(LockState.from_data({"holder": "x", "expires": "soon"}), "me", 1.0)


@pytest.mark.parametrize(("current", "slot"), [(None, "a"), ("a", "b"), ("b", "a"), ("stranger", "a")])
def test_next_slot_alternates(current: str | None, slot: str) -> None:
    """The new credential always takes the slot not in use."""
    assert next_slot(["a", "b"], current) == slot


def test_htpasswd_rewrite_keeps_other_users() -> None:
    """Replacing one user's entry leaves every other line as it was."""
    lines = ["alice:$2y$x", "a:$2y$old", "bob:$2y$y"]
    assert htpasswd_lines_with(lines, "a", "a:$2y$new") == ["alice:$2y$x", "bob:$2y$y", "a:$2y$new"]
    assert htpasswd_lines_with(lines, "a", None) == ["alice:$2y$x", "bob:$2y$y"]


def test_command_request_carries_no_secret() -> None:
    """The create request names the current username and version, never the password."""
    from regwarden.credentials.model import CredentialSecret

    current = CredentialSecret("c", 3, username="robot$ci", password="hunter2-very-secret")
    request = command_request("create", "c", current=current)
    assert request == {"version": 1, "action": "create", "credential": "c",
                       "current": {"version": 3, "username": "robot$ci"}}


@pytest.mark.parametrize(("raw", "message"), [
    (b"not json", "no valid JSON"),
    (b"[1]", "not a JSON object"),
    (b'{"username": "u"}', "lacks password"),
])
def test_bad_command_answers_are_refused(raw: bytes, message: str) -> None:
    """A command's answer is validated; the error says what is wrong, not what was sent."""
    with pytest.raises(ProviderError, match=message):
        parse_command_answer(raw, "c")


def test_command_answer_ref_defaults_to_username() -> None:
    """Without an explicit ref, the username identifies the credential to revoke later."""
    issued = parse_command_answer(b'{"username": "robot$1", "password": "pw-123456"}', "c")
    assert issued.ref == "robot$1" and issued.data == {"username": "robot$1", "password": "pw-123456"}
    assert "pw-123456" not in repr(issued)
