"""Default logins tried once per interval by the whole fleet, not once per host.

Every host of a fleet checks the same registries. Left alone, each would try the well-known default
logins every `[posture].interval`: a hundred hosts make a hundred times `default_credentials_max_attempts`
failed logins an hour, from a hundred addresses, and a registry that locks an account after N
failures (whatever the address) locks out its real `admin`. So, where there is a `[vault]`, the hosts
agree through Vault, as they do on rotations: one KV v2 entry per registry address,
`<[vault].lock_path>/posture-logins/<host_port>`, taken with check-and-set.

- The entry says `done` (by a host, at a time, with the user whose default password worked or None,
  and how many logins were tried): younger than the interval, every host takes that result as its own.
- It says `claimed`, by another host, not expired: that host is trying now; the others wait for its
  result (next run).
- Otherwise (none, `free`, `done` too old, `claimed` but expired): a host claims it (`cas` = the
  version it read; of hosts racing, one wins), tries, and writes `done`, or `free` when nothing could be
  tried (the registry did not answer), so that another host may.

Vault unreachable: the default logins are not tried this run (the remembered result stands), since
trying alone would bring back the multiplication the entry prevents. The entry holds no secret: the
user name of a documented default pair, what the finding's alert says anyway.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import VaultError
from .report import Remembered

__all__ = ["CLAIM_SECONDS", "Decision", "FleetLogins"]

CLAIM_SECONDS = 600.0  # a claim not finished by then (the host died) may be taken over
CLOCK_SKEW = 60.0  # a time further in the future than this (another host's clock, a bad entry) is not believed
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class Decision:
    """What this host does about default logins this run."""

    action: Literal["try", "adopt", "wait"]
    remembered: Remembered | None = None  # adopt: the fleet's result
    version: int = 0  # try: the version of our claim (the cas of the result)
    by: str = ""  # adopt/wait: the host that tried or is trying


def _entry(data: dict[str, Any]) -> tuple[str, str, float, float, str | None, int]:
    """(state, host, at, expires, user, attempts) of an entry; a mangled one reads as free."""
    try:
        user = data.get("user")
        return (str(data.get("state", "free")), str(data.get("host", "")), float(data.get("at", 0)),
                float(data.get("expires", 0)), str(user) if user else None, int(data.get("attempts", 0)))
    except (TypeError, ValueError):
        return "free", "", 0.0, 0.0, None, 0


class FleetLogins:
    """The fleet-wide record of default-login runs (one KV v2 entry per registry address)."""

    def __init__(self, vault: Any, lock_path: str, host: str) -> None:
        self._vault = vault
        self._mount, _, prefix = lock_path.strip("/").partition("/")
        self._prefix = f"{prefix}/posture-logins" if prefix else "posture-logins"
        self.host = host

    def location(self, address: str) -> tuple[str, str]:
        """(mount, path) of the entry of the registry at `address`."""
        return self._mount, f"{self._prefix}/{_UNSAFE.sub('_', address.lower())}"

    def decide(self, address: str, interval: float, now: float) -> Decision:
        """Try, adopt the fleet's result, or wait for the host trying now. Raises VaultError."""
        version, data = self._read(address)
        state, host, at, expires, user, attempts = _entry(data)
        if state == "done" and -CLOCK_SKEW <= now - at < interval * 0.95:
            return Decision("adopt", Remembered(at, user, attempts), by=host)
        if state == "claimed" and now < expires <= now + CLAIM_SECONDS + CLOCK_SKEW and host != self.host:
            return Decision("wait", by=host)
        claim = {"state": "claimed", "host": self.host, "at": now, "expires": now + CLAIM_SECONDS}
        won = self._write(address, claim, version)
        if won is None:
            return Decision("wait", by="another host")
        return Decision("try", version=won)

    def finish(self, address: str, version: int, result: Remembered | None) -> bool:
        """Write the result of our claim (`None`: nothing could be tried, the entry is freed); False if
        the claim was taken over meanwhile. Raises VaultError."""
        data: dict[str, Any] = {"state": "free", "host": self.host, "at": 0, "expires": 0}
        if result is not None:
            data = {"state": "done", "host": self.host, "at": result.at, "expires": 0, "user": result.user,
                    "attempts": result.attempts}
        return self._write(address, data, version) is not None

    def _read(self, address: str) -> tuple[int, dict[str, Any]]:
        mount, path = self.location(address)
        try:
            version: int = self._vault.read_metadata(mount, path).current_version
        except VaultError as exc:
            if exc.status == 404:  # no entry yet: version 0 (cas 0 creates it)
                return 0, {}
            raise
        try:
            return version, dict(self._vault.read_version(mount, path, version))
        except VaultError as exc:
            if exc.status == 404:  # its latest version deleted or destroyed: free
                return version, {}
            raise

    def _write(self, address: str, data: dict[str, Any], cas: int) -> int | None:
        """The version written, or None on a cas mismatch that is not our own write landing twice
        (rotation/lock.py explains the read-back)."""
        mount, path = self.location(address)
        try:
            return int(self._vault.write(mount, path, data, cas=cas))
        except VaultError as exc:
            if exc.status != 400:
                raise
        version, current = self._read(address)
        return version if current == data else None
