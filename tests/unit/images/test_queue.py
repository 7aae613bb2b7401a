"""The image-check queue (images/component.py): one check per digest, cosign's own pushes ignored
(restarts: tests/integration/images)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from regwarden.bus import Bus
from regwarden.component import Context
from regwarden.config import parse_config
from regwarden.events import Event, Target
from regwarden.images.component import ImageChecks
from regwarden.metrics import Metrics
from regwarden.state import StateStore

DIGEST = "sha256:" + "ab" * 32
CLEAN = "import json; print(json.dumps({'SchemaVersion': 2, 'Results': []}))"


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    cfg = parse_config({"daemon": {"state_dir": str(tmp_path / "state")},
                        "image_checks": {"scanner": {"command": [sys.executable, "-c", CLEAN]}}})
    metrics = Metrics()
    state = StateStore(tmp_path / "state")
    yield Context(config=cfg, metrics=metrics, state=state, bus=Bus(metrics),
                  scheduler=BackgroundScheduler(timezone="UTC"), host="h1")
    state.close()


def push(tag: str, digest: str = DIGEST, source: str = "registry-notify") -> Event:
    return Event(source=source, kind="image.push", time=datetime(2026, 12, 5, tzinfo=UTC),  # type: ignore[arg-type]
                 target=Target("reg:5000", "app", tag, digest), outcome="success")


def queued(ctx: Context) -> list[tuple[str, str]]:
    return [(r["check_name"], r["digest"]) for r in ctx.state.query("SELECT check_name, digest FROM image_checks")]


def test_one_digest_pushed_under_two_tags_is_scanned_once(ctx: Context) -> None:
    """The same manifest pushed as :1 and :latest (and its notification delivered twice) is one scan."""
    checks = ImageChecks(poll_interval=60)
    checks.start(ctx)
    try:
        checks.handle_batch([push("1"), push("latest"), push("1")])
    finally:
        checks.stop()
    assert queued(ctx) == [("scan", DIGEST)]


def test_cosign_attachments_and_other_sources_are_not_checked(ctx: Context) -> None:
    """A push of a sha256-HEX.sig tag, and image.push records from the registry log, queue nothing."""
    checks = ImageChecks(poll_interval=60)
    checks.start(ctx)
    try:
        checks.handle_batch([push(DIGEST.replace(":", "-") + ".sig", "sha256:" + "cd" * 32),
                             push("1", source="registry-log")])
    finally:
        checks.stop()
    assert queued(ctx) == []



def test_a_rule_for_a_named_registry_meets_its_pushes_by_address(tmp_path: Path) -> None:
    """A signature rule naming registry "team" (https://reg.example.com:443) applies to a notification
    whose request.host is `reg.example.com`; the job is queued under the address it can be reached at."""
    cfg = parse_config({"daemon": {"state_dir": str(tmp_path / "state")},
                        "registries": [{"name": "team", "url": "https://reg.example.com:443"}],
                        "image_checks": {"signatures": [{"registry": "team", "repositories": ["app"],
                                                         "require_signature": True}]}})
    metrics = Metrics()
    state = StateStore(tmp_path / "state")
    ctx = Context(config=cfg, metrics=metrics, state=state, bus=Bus(metrics),
                  scheduler=BackgroundScheduler(timezone="UTC"), host="h1")
    checks = ImageChecks(poll_interval=60)
    checks.start(ctx)
    try:
        checks.handle_batch([Event(source="registry-notify", kind="image.push", time=datetime(2026, 12, 5, tzinfo=UTC),
                                   target=cfg.registry_names.target("reg.example.com", "app", "1", DIGEST),
                                   outcome="success")])
    finally:
        checks.stop()
        rows = [(r["check_name"], r["registry"]) for r in state.query("SELECT check_name, registry FROM image_checks")]
        state.close()
    assert rows == [("signature", "reg.example.com")]
