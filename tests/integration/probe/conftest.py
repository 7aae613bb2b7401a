"""Probe domain: a real Context whose bus collects Events and Signals, and an OpenBao PKI issuing
registry server certificates (any TTL) from CAs of its own."""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from regwarden.bus import Bus
from regwarden.component import Context
from regwarden.config import parse_config
from regwarden.events import Event, Signal
from regwarden.metrics import Metrics
from regwarden.state import StateStore
from tests.integration.harness import OpenBaoDev, RegistryTLS, secret_file


class Collected:
    """What the bus dispatched: Events and Signals, in order."""

    def __init__(self) -> None:
        self.items: list[Event | Signal] = []
        self._lock = threading.Lock()
        self._bus: Bus | None = None

    def __call__(self, item: Event | Signal) -> None:
        with self._lock:
            self.items.append(item)

    def drain(self) -> None:
        """Wait until everything published so far has been dispatched."""
        assert self._bus is not None
        done = threading.Event()
        marker = Signal(labels={"alertname": "__drain__" + secrets.token_hex(4)})
        name = marker.labels["alertname"]
        self._bus.subscribe(name, lambda item: done.set() if item is marker else None)
        self._bus.publish(marker)
        done.wait(10)
        self._bus.unsubscribe(name)

    def events(self, kind: str) -> list[Event]:
        self.drain()
        with self._lock:
            return [i for i in self.items if isinstance(i, Event) and i.kind == kind]

    def signals(self, alertname: str) -> list[Signal]:
        self.drain()
        with self._lock:
            return [i for i in self.items if isinstance(i, Signal) and i.labels.get("alertname") == alertname]


@dataclass
class ProbeHost:
    ctx: Context
    collected: Collected


@pytest.fixture
def probe_host(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], ProbeHost]]:
    """Make a Context for a config (the TOML tables as a dict; `daemon` is filled in); its scheduler
    runs paused, so tests drive jobs themselves."""
    with contextlib.ExitStack() as stack:
        def make(tables: dict[str, Any]) -> ProbeHost:
            state_dir = tmp_path / f"state-{secrets.token_hex(3)}"
            cfg = parse_config({"daemon": {"state_dir": str(state_dir), "host": "probe-test"}, **tables})
            metrics = Metrics()
            state = StateStore(state_dir)
            bus = Bus(metrics)
            scheduler = BackgroundScheduler(timezone="UTC")
            ctx = Context(config=cfg, metrics=metrics, state=state, bus=bus, scheduler=scheduler, host="probe-test")
            collected = Collected()
            collected._bus = bus
            bus.subscribe("collect", collected)
            bus.start()
            scheduler.start(paused=True)
            stack.callback(state.close)
            stack.callback(bus.stop, 5.0)
            stack.callback(scheduler.shutdown, False)
            return ProbeHost(ctx, collected)

        yield make


class Pki:
    """A PKI mount in OpenBao with its own root CA; issues server certificates as files."""

    def __init__(self, openbao: OpenBaoDev, workdir: Path) -> None:
        self.client = openbao.client()
        self.mount = f"pki-probe-{secrets.token_hex(3)}"
        self.workdir = workdir
        self.client.sys.enable_secrets_engine("pki", path=self.mount, config={"max_lease_ttl": "87600h"})
        root = self.client.secrets.pki.generate_root(
            "internal", f"regwarden probe test CA {self.mount}", extra_params={"ttl": "8760h"},
            mount_point=self.mount)
        self.ca_path = workdir / f"{self.mount}-ca.pem"
        self.ca_path.write_text(root["data"]["certificate"] + "\n")
        self.client.secrets.pki.create_or_update_role(
            "registry", extra_params={"allow_any_name": True, "allow_ip_sans": True, "server_flag": True,
                                      "client_flag": False, "enforce_hostnames": False, "max_ttl": "8760h"},
            mount_point=self.mount)

    def server_tls(self, ip: str, ttl: str = "720h") -> RegistryTLS:
        issued = self.client.secrets.pki.generate_certificate(
            "registry", "registry", extra_params={"ip_sans": ip, "ttl": ttl}, mount_point=self.mount)["data"]
        name = secrets.token_hex(3)
        cert, key = self.workdir / f"{name}.crt", self.workdir / f"{name}.key"
        cert.write_text(issued["certificate"] + "\n")  # the leaf only, as registries usually serve it
        secret_file(key, issued["private_key"] + "\n")
        return RegistryTLS(certificate=cert, key=key)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.sys.disable_secrets_engine(self.mount)


@pytest.fixture
def pki_factory(openbao: OpenBaoDev, tmp_path: Path) -> Iterator[Callable[[], Pki]]:
    """Make PKI mounts (each its own root CA), removed after the test."""
    made: list[Pki] = []

    def make() -> Pki:
        made.append(Pki(openbao, tmp_path))
        return made[-1]

    yield make
    for pki in made:
        pki.close()
