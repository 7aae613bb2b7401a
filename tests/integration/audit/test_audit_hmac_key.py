"""The audit chain keyed with an HMAC key read from a real OpenBao."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from click.testing import CliRunner

from regwarden.audit.chain import verify
from regwarden.audit.component import AuditTrail, close_writers
from regwarden.bus import Bus
from regwarden.cli import main
from regwarden.component import Context
from regwarden.config import load_config
from regwarden.events import Event, utcnow
from regwarden.metrics import Metrics
from regwarden.state import StateStore
from tests.integration.harness import secret_file

pytestmark = pytest.mark.integration


def test_audit_chain_uses_the_hmac_key_from_vault(openbao: Any, tmp_path: Path) -> None:
    """With audit.hmac_key_vault_path the chain verifies only with the key stored in Vault, which never
    appears in the log."""
    key = "audit-" + secrets.token_hex(16)
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path="regwarden/audit-hmac", secret={"hmac_key": key}, mount_point="secret")
    token_file = secret_file(tmp_path / "vault-token", openbao.token)
    config = tmp_path / "config.toml"
    config.write_text(f'''
[daemon]
state_dir = "{tmp_path}/state"
audit_log = "{tmp_path}/log/audit.jsonl"
[vault]
address = "{openbao.address}"
auth = {{ method = "token", token_file = "{token_file}" }}
[audit]
hmac_key_vault_path = "secret/regwarden/audit-hmac"
''')
    cfg = load_config(config)
    metrics = Metrics()
    state = StateStore(cfg.daemon.state_dir)
    ctx = Context(config=cfg, metrics=metrics, state=state, bus=Bus(metrics),
                  scheduler=BackgroundScheduler(timezone="UTC"), host="h1")
    trail = AuditTrail()
    try:
        trail.start(ctx)
        deadline = time.monotonic() + 30
        while not trail.health().ready:
            assert time.monotonic() < deadline, trail.health().detail
            time.sleep(0.05)
        ctx.bus.dispatch(Event(source="regwarden", kind="test.keyed", time=utcnow(), host="h1",
                               detail={"note": f"value {key} must be scrubbed"}))
        trail.stop()
    finally:
        close_writers()
        state.close()
    log = cfg.daemon.audit_log
    assert verify([log], key=key.encode()).ok
    assert not verify([log]).ok
    assert key not in log.read_text()
    # `regwarden audit verify` reads the key from Vault itself when the config names it
    done = CliRunner().invoke(main, ["audit", "verify", "-c", str(config)])
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith("OK: 1 records") and key not in done.output
