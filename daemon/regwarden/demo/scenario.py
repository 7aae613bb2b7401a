"""What the demo does while the daemon runs: shows audit records and gives regwarden something to see.

`AuditEcho` prints each new audit record as one short line. `Scenario` pushes an image with the
credential regwarden applied (after each rotation, to show the new one works) and, once, logs in as
an unknown user a few times so that the auth-failure burst detector raises a real alert.
Both are threads stopped through one Event; their only output is `say(line)`.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["AuditEcho", "Scenario", "audit_line"]

Say = Callable[[str], None]
# frequent records that would drown the interesting ones (`regwarden audit tail -f` shows everything)
QUIET_KINDS = frozenset({"registry.ping", "registry.log", "registry.request", "auth.challenge", "catalog.list",
                         "tags.list"})


def audit_line(record: dict[str, Any]) -> str:
    """One audit record as a short line: seq, kind, source, target, actor, outcome."""
    target = record.get("target") or {}
    actor = record.get("actor") or {}
    what = target.get("repository") or ""
    if what and target.get("tag"):
        what += ":" + str(target["tag"])
    detail = record.get("detail") or {}
    if not what and detail.get("credential"):
        what = f"credential {detail['credential']}"
        version = detail.get("version", detail.get("new_version"))
        if version is not None:
            what += f" v{version}"
    who = actor.get("user") or actor.get("addr") or ""
    parts = [f"audit #{record.get('seq')}", str(record.get("kind")), f"({record.get('source')})", what,
             f"by {who}" if who else "", str(record.get("outcome") or "")]
    return "  ".join(p for p in parts if p)


class AuditEcho(threading.Thread):
    """Follows the audit log from its start and prints the records that are not in QUIET_KINDS."""

    def __init__(self, path: Path, say: Say, stop: threading.Event) -> None:
        super().__init__(name="demo-audit-echo", daemon=True)
        self.path, self.say, self.stop_event = path, say, stop
        self.shown = self.hidden = 0

    def run(self) -> None:
        offset, pending = 0, b""
        while not self.stop_event.wait(0.5):
            try:
                with self.path.open("rb") as log:
                    log.seek(offset)
                    chunk = log.read()
            except FileNotFoundError:
                continue
            offset += len(chunk)
            *lines, pending = (pending + chunk).split(b"\n")
            for raw in lines:
                self._show(raw)

    def _show(self, raw: bytes) -> None:
        try:
            record = json.loads(raw)
        except ValueError:
            return
        if record.get("kind") in QUIET_KINDS or str(record.get("kind", "")).startswith("blob."):
            self.hidden += 1
            return
        self.shown += 1
        self.say(audit_line(record))


class Scenario(threading.Thread):
    """Pushes with the applied credential after every new version; one burst of failed logins."""

    def __init__(self, *, registry_url: str | None, client_config: Path, docker: Callable[[], Any] | None,
                 say: Say, stop: threading.Event, burst_after: float = 15.0, burst_size: int = 6) -> None:
        super().__init__(name="demo-scenario", daemon=True)
        self.registry_url = registry_url
        self.client_config = client_config
        self.docker = docker
        self.say, self.stop_event = say, stop
        self.burst_after, self.burst_size = burst_after, burst_size

    @property
    def host_port(self) -> str:
        assert self.registry_url is not None
        return self.registry_url.split("://", 1)[1]

    def run(self) -> None:
        if self.registry_url is None:
            return
        began, burst_done, pushed_as = time.monotonic(), False, None
        while not self.stop_event.wait(1.0):
            if not burst_done and time.monotonic() - began >= self.burst_after:
                self._failed_logins()
                burst_done = True
            applied = self._applied()
            if applied is not None and applied != pushed_as and self.docker is not None:
                pushed_as = applied
                self._push(*applied)

    def _applied(self) -> tuple[str, str] | None:
        """(username, password) regwarden wrote into the Docker client config for the registry."""
        try:
            entry = json.loads(self.client_config.read_text())["auths"][self.host_port]
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return user, password

    def _push(self, username: str, password: str) -> None:
        import docker.errors

        assert self.docker is not None
        reference = f"{self.host_port}/demo/app"
        tag = time.strftime("%H%M%S")
        try:
            client = self.docker()
            try:
                client.images.get("tiny:1").tag(reference, tag)
                for message in client.api.push(reference, tag=tag, stream=True, decode=True,
                                               auth_config={"username": username, "password": password}):
                    if "error" in message:
                        raise docker.errors.APIError(str(message["error"]))
            finally:
                client.close()
        except Exception as exc:
            self.say(f"demo: push of {reference}:{tag} as {username} failed: {exc}")
            return
        self.say(f"demo: pushed {reference}:{tag} through dockerd as {username!r}, the credential regwarden"
                 " applied to config.json")

    def _failed_logins(self) -> None:
        import requests

        assert self.registry_url is not None
        self.say(f"demo: logging in {self.burst_size} times as 'mallory' with a wrong password"
                 " (the auth-failure burst detector should raise RegistryAuthFailureBurst)")
        for _ in range(self.burst_size):
            try:
                requests.get(f"{self.registry_url}/v2/", auth=("mallory", "not-the-password"), timeout=3)
            except requests.RequestException as exc:
                self.say(f"demo: login attempt failed to connect: {type(exc).__name__}")
                return
