"""`docker-credential-<name>`: the Docker credential-helper protocol over a JSON file, every call logged.

A real helper executable (store/get/erase/list on stdin/stdout, "credentials not found" on a miss, as
docker-credential-helpers answers), installed on PATH for one test.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = ["InstalledHelper", "install_helper"]

SCRIPT = """#!/usr/bin/env python3
import json, os, sys
store, calls = os.environ["RWTEST_HELPER_STORE"], os.environ["RWTEST_HELPER_CALLS"]
data = json.load(open(store)) if os.path.exists(store) else {}
action = sys.argv[1]
payload = sys.stdin.read()
with open(calls, "a") as log:
    log.write(action + "\\n")
if action == "store":
    item = json.loads(payload)
    data[item["ServerURL"]] = {"Username": item["Username"], "Secret": item["Secret"]}
elif action == "get":
    url = payload.strip()
    if url not in data:
        print("credentials not found in native keychain")
        sys.exit(1)
    print(json.dumps({"ServerURL": url, **data[url]}))
    sys.exit(0)
elif action == "erase":
    data.pop(payload.strip(), None)
elif action == "list":
    print(json.dumps({k: v["Username"] for k, v in data.items()}))
    sys.exit(0)
json.dump(data, open(store, "w"))
"""


@dataclass(frozen=True)
class InstalledHelper:
    name: str
    store: Path  # what the helper holds: {server: {"Username", "Secret"}}
    calls_log: Path

    def stored(self) -> dict[str, Any]:
        return json.loads(self.store.read_text()) if self.store.exists() else {}

    def put(self, server: str, username: str, secret: str) -> None:
        self.store.write_text(json.dumps({**self.stored(), server: {"Username": username, "Secret": secret}}))

    def calls(self) -> list[str]:
        return self.calls_log.read_text().split() if self.calls_log.exists() else []


def install_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str = "rwtest") -> InstalledHelper:
    """Put `docker-credential-<name>` on PATH for this test, its store and call log under `tmp_path`."""
    bindir = tmp_path / "helper-bin"
    bindir.mkdir(exist_ok=True)
    binary = bindir / f"docker-credential-{name}"
    binary.write_text(SCRIPT)
    binary.chmod(0o755)
    helper = InstalledHelper(name, tmp_path / "helper-store.json", tmp_path / "helper-calls.log")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("RWTEST_HELPER_STORE", str(helper.store))
    monkeypatch.setenv("RWTEST_HELPER_CALLS", str(helper.calls_log))
    return helper
