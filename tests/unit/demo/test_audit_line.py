"""The demo shows each audit record as one short line."""

from __future__ import annotations

import pytest

from regwarden.demo.scenario import audit_line


@pytest.mark.parametrize(("record", "line"), [
    ({"seq": 27, "kind": "image.push", "source": "registry-notify", "outcome": "success",
      "target": {"registry": "127.0.0.1:5000", "repository": "demo/app", "tag": "1"}, "actor": {"user": "demo-a"}},
     "audit #27  image.push  (registry-notify)  demo/app:1  by demo-a  success"),
    ({"seq": 9, "kind": "credential.rotated", "source": "regwarden", "outcome": "success",
      "target": {"registry": "demo"}, "detail": {"credential": "demo-ci", "new_version": 2}},
     "audit #9  credential.rotated  (regwarden)  credential demo-ci v2  success"),
    ({"seq": 66, "kind": "auth.failure", "source": "registry-log", "outcome": "failure",
      "actor": {"addr": "127.0.0.1"}, "target": {}},
     "audit #66  auth.failure  (registry-log)  by 127.0.0.1  failure"),
])
def test_audit_line(record: dict[str, object], line: str) -> None:
    """Sequence, kind, source, what, who and outcome; absent parts are left out."""
    assert audit_line(record) == line
