"""`regwarden demo`: start the sandbox, run the daemon on it in the foreground, clean up on Ctrl-C."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from types import FrameType

import click

from .sandbox import DEMO_CREDENTIAL, Sandbox, missing_packages

__all__ = ["demo"]


def say(line: str) -> None:
    click.echo(line)
    sys.stdout.flush()


def _interrupt(signum: int, _: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@click.command()
@click.option("--burst-after", default=15.0, show_default=True, metavar="SECONDS",
              help="When the demo provokes the auth-failure alert.")
@click.option("--install-packages", is_flag=True,
              help="First apt-get install the Debian packages of what is missing (root, Debian/Ubuntu).")
def demo(burst_after: float, install_packages: bool) -> None:
    """Run a self-contained sandbox and watch regwarden work (Ctrl-C stops and removes everything).

    Starts, in a temporary directory and on free loopback ports, what is installed of: an OpenBao dev
    server, a distribution registry with htpasswd auth and notifications, and a private dockerd. Then
    runs the daemon in the foreground on a config that rotates a registry credential every 30 s,
    applies it to a Docker client config, probes the registry, tails its log, receives its
    notifications and the engine's events, and alerts to the console.
    """
    from ..config import load_config
    from ..daemon import Daemon
    from ..logging import configure_logging
    from .processes import ServiceFailed
    from .scenario import AuditEcho, Scenario

    if install_packages:
        _install_packages()
    # until the daemon installs its own handlers, SIGTERM cleans up like Ctrl-C
    signal.signal(signal.SIGTERM, _interrupt)
    sandbox = Sandbox()
    say(f"demo: sandbox in {sandbox.root}")
    stop = threading.Event()
    try:
        try:
            sandbox.start()
        except ServiceFailed as exc:
            say(f"demo: a service failed to start: {exc}")
            sys.exit(1)
        for name, pid in sandbox.services.pids().items():
            say(f"demo: started {name} (pid {pid})")
        for what, why in sandbox.skipped.items():
            say(f"demo: SKIPPED {what}: {why}")
        _explain(sandbox)
        configure_logging("console", "info")
        daemon = Daemon(sandbox.config_path, load_config(sandbox.config_path))
        AuditEcho(sandbox.audit_log, say, stop).start()
        Scenario(registry_url=sandbox.registry_url, client_config=sandbox.client_config,
                 docker=sandbox.docker_client if sandbox.docker_host else None, say=say, stop=stop,
                 burst_after=burst_after).start()
        daemon.serve()  # until Ctrl-C (SIGINT) or SIGTERM
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        for signum in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the clean-up short
            signal.signal(signum, signal.SIG_IGN)
        failed = sandbox.stop()
        if failed:
            say(f"demo: could not stop {', '.join(failed)}; check for leftover processes")
        say(f"demo: stopped; removed {sandbox.root}")


def _install_packages() -> None:
    """apt-get install what the sandbox lacks (their services start as Debian starts them; the demo
    runs private instances of its own on free ports)."""
    packages = missing_packages()
    if not packages:
        return
    command = ["apt-get", "install", "-y", "-q", *packages]
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        say(f"demo: cannot install packages here (needs root and apt-get); run: {' '.join(command)}")
        return
    say(f"demo: installing {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-q"], command):
        if subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=False).returncode != 0:
            say(f"demo: `{' '.join(argv)}` failed; going on with what is installed")
            return


def _explain(sandbox: Sandbox) -> None:
    config = sandbox.config_path
    lines = [f"demo: regwarden config: {config}"]
    if sandbox.vault_address and sandbox.registry_url:
        lines.append(f"demo: credential {DEMO_CREDENTIAL!r} is rotated every 30 s (htpasswd users demo-a/demo-b,"
                     f" Vault token holding only the shipped policy); each version is verified against"
                     f" {sandbox.registry_url} and applied to {sandbox.client_config}")
    lines += [
        "demo: watch for: rotation_step / credential_updated (rotation and apply), audit #N lines (the audit"
        " trail), alert_firing (the console sink): RegistryPlainHTTP at once, RegistryAuthFailureBurst later",
        f"demo: in another terminal: regwarden status -c {config}   |   regwarden audit tail -f -c {config}",
        "demo: Ctrl-C stops everything and removes the sandbox",
    ]
    for line in lines:
        say(line)
