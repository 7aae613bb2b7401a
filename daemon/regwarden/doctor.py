"""`regwarden doctor`: what the service will need, checked on the host before `systemctl start`.

The config itself (as `check-config` checks it), the Docker engine's socket, Vault (reachable, and the
token's policy grants every path the config implies, asked with `sys/capabilities-self`), the listeners'
ports, and the systemd sandbox: with `ProtectSystem=strict` only the unit's `ReadWritePaths=` and its
State/Logs/Runtime/Cache directories are writable, so every path regwarden writes must lie inside them
and, where the unit marks it optional (`-`), exist before the start.

Pure parts (unit parsing, containment, required capabilities, their comparison) are functions of their
inputs; the adapters at the bottom only gather the facts.
"""

from __future__ import annotations

import os
import shlex
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import click

from .config import Config, ListenAddress
from .rotation.lock import lock_location

__all__ = ["Check", "Need", "UnitSandbox", "doctor_command", "missing_capabilities", "parse_unit",
           "required_capabilities", "sandbox_checks"]

DEFAULT_UNIT = Path("/etc/systemd/system/regwarden.service")
# the base directories of systemd's per-unit directories (systemd.exec, "RuntimeDirectory=")
_EXEC_DIRECTORIES = {"StateDirectory": "/var/lib", "LogsDirectory": "/var/log", "RuntimeDirectory": "/run",
                     "CacheDirectory": "/var/cache"}


@dataclass(frozen=True)
class Check:
    """One thing checked: `ok`, or a problem with where it is and how to fix it."""

    check: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        return f"{'ok' if self.ok else 'PROBLEM'} {self.check}: {self.detail}" + (f" (fix: {self.fix})"
                                                                                   if self.fix else "")


# ------------------------------------------------------------------------------------ systemd unit


@dataclass(frozen=True)
class WritablePath:
    path: PurePosixPath
    optional: bool  # "-" prefix: ignored by systemd when missing (then not writable)
    source: str


@dataclass(frozen=True)
class UnitSandbox:
    """What the unit's sandbox leaves writable."""

    protect_system: str = "no"
    writable: tuple[WritablePath, ...] = field(default_factory=tuple)


def parse_unit(files: Sequence[tuple[str, str]]) -> UnitSandbox:
    """The sandbox of a unit from its file and drop-ins, in the order systemd reads them (`(name, text)`):
    later assignments override `ProtectSystem=`; list settings accumulate and an empty one resets."""
    protect = "no"
    lists: dict[str, list[WritablePath]] = {"ReadWritePaths": [], **{k: [] for k in _EXEC_DIRECTORIES}}
    for name, text in files:
        section = ""
        for raw in _logical_lines(text):
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
                continue
            key, sep, value = line.partition("=")
            key, value = key.strip(), value.strip()
            if section != "Service" or not sep:
                continue
            if key == "ProtectSystem":
                protect = {"yes": "yes", "true": "yes", "1": "yes", "on": "yes", "full": "full",
                           "strict": "strict"}.get(value.lower(), "no")
            elif key in lists:
                if not value:
                    lists[key].clear()
                    continue
                for word in shlex.split(value):
                    lists[key].append(_writable(key, word, f"{name}: {key}="))
    return UnitSandbox(protect, tuple(path for entries in lists.values() for path in entries))


def _logical_lines(text: str) -> Iterable[str]:
    """Lines with backslash continuations joined, as systemd reads them."""
    pending = ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending


def _writable(key: str, word: str, source: str) -> WritablePath:
    if key in _EXEC_DIRECTORIES:  # relative to the base; "name:mode" forms are not used for these
        return WritablePath(PurePosixPath(_EXEC_DIRECTORIES[key]) / word.split(":", 1)[0], False, source)
    optional = False
    while word[:1] in "-+":  # "-": missing is fine; "+": relative to RootDirectory= (the host here)
        optional = optional or word[0] == "-"
        word = word[1:]
    return WritablePath(PurePosixPath(word), optional, source)


def unit_files(unit: Path) -> list[tuple[str, str]]:
    """The unit file and its drop-ins (`UNIT.d/*.conf`, sorted), as systemd would read them."""
    files = [(str(unit), unit.read_text(encoding="utf-8"))]
    dropins = unit.parent / f"{unit.name}.d"
    if dropins.is_dir():
        files += [(str(p), p.read_text(encoding="utf-8")) for p in sorted(dropins.glob("*.conf"))]
    return files


def inside(path: PurePosixPath, root: PurePosixPath) -> bool:
    return path == root or root in path.parents


def written_paths(cfg: Config) -> list[tuple[str, PurePosixPath]]:
    """(what, directory) of everything the daemon writes, from the config."""
    d = cfg.daemon
    paths = [("daemon.state_dir", PurePosixPath(d.state_dir)),
             ("daemon.audit_log", PurePosixPath(d.audit_log).parent)]
    if cfg.docker is not None:
        paths += [(f"docker.client_configs[{i}]", PurePosixPath(p).parent)
                  for i, p in enumerate(cfg.docker.client_configs)]
        if any(c.provider == "vault-pki" for c in cfg.credentials):
            paths.append(("docker.certs_dir", PurePosixPath(cfg.docker.certs_dir)))
    for i, cred in enumerate(cfg.credentials):
        if cred.htpasswd is not None:
            paths.append((f"credentials[{i}].htpasswd.file", PurePosixPath(cred.htpasswd.file).parent))
    return paths


# what each ProtectSystem= mode makes read-only ("strict": the whole file system)
_READ_ONLY = {"no": (), "yes": ("/usr", "/boot", "/efi"), "full": ("/usr", "/boot", "/efi", "/etc"), "strict": ("/",)}


def sandbox_checks(cfg: Config, sandbox: UnitSandbox, exists: Mapping[PurePosixPath, bool]) -> list[Check]:
    """Each written path against the sandbox: inside a writable path, and existing where it must."""
    checks = []
    for what, path in written_paths(cfg):
        name = f"sandbox {what}"
        if not any(inside(path, PurePosixPath(root)) for root in _READ_ONLY[sandbox.protect_system]):
            checks.append(Check(name, True, f"{path} (not made read-only by ProtectSystem={sandbox.protect_system})"))
            continue
        covering = [w for w in sandbox.writable if inside(path, w.path)]
        if not covering:
            checks.append(Check(name, False, f"{path} is read-only to the service (ProtectSystem="
                                             f"{sandbox.protect_system}, not under any ReadWritePaths=)",
                                f"add ReadWritePaths={path} in a drop-in (systemctl edit regwarden)"))
        elif all(w.optional and not exists.get(w.path, False) for w in covering):
            w = covering[0]
            checks.append(Check(name, False, f"{w.path} does not exist, so systemd ignores '-{w.path}' "
                                             f"({w.source}) and {path} stays read-only",
                                f"install -d -m 0700 {w.path}"))
        else:
            checks.append(Check(name, True, f"{path} writable through {covering[0].source}{covering[0].path}"))
    return checks


# ------------------------------------------------------------------------------------ Vault policy


@dataclass(frozen=True)
class Need:
    path: str
    capabilities: frozenset[str]
    why: str


def required_capabilities(cfg: Config) -> list[Need]:
    """Every Vault path and capability the daemon will use with this config."""
    needs: list[Need] = []

    def need(path: str, why: str, *caps: str) -> None:
        needs.append(Need(path, frozenset(caps), why))

    for cred in cfg.credentials:
        where = f"credential {cred.name}"
        need(f"{cred.mount}/metadata/{cred.path}", f"{where}: watch", "read")
        need(f"{cred.mount}/data/{cred.path}", f"{cred.name}: read the secret", "read")
        if cred.rotates:
            need(f"{cred.mount}/data/{cred.path}", f"{where}: publish new versions", "create", "update")
            need(f"{cred.mount}/metadata/{cred.path}", f"{where}: rotation bookkeeping", "update")
            assert cfg.vault is not None
            mount, lock = lock_location(cfg.vault.lock_path, cred.name)
            need(f"{mount}/data/{lock}", f"{where}: rotation lock", "create", "read", "update")
        if cred.pki is not None:
            need(f"{cred.pki.mount}/issue/{cred.pki.role}", f"{where}: issue certificates", "update")
            need(f"{cred.pki.mount}/revoke", f"{where}: revoke old certificates", "update")
    if cfg.audit.hmac_key_vault_path:
        mount, _, path = cfg.audit.hmac_key_vault_path.strip("/").partition("/")
        need(f"{mount}/data/{path}", "audit HMAC key", "read")
    if cfg.vault is not None and cfg.audit.witness:
        from .audit.witness import head_location

        try:
            mount, path = head_location(cfg.audit.witness_path, cfg.daemon.hostname)
        except ValueError:
            pass  # the daemon reports the host name; the policy check has no path to ask about
        else:
            need(f"{mount}/data/{path}", "audit chain witness", "create", "update")
    if cfg.vault is not None:
        need("auth/token/renew-self", "token renewal", "update")
        need("auth/token/lookup-self", "token lookup", "read")
    return needs


def missing_capabilities(needs: Sequence[Need], granted: Mapping[str, Sequence[str]]) -> list[Check]:
    """One check a path: what the token's policy grants against what the config needs there."""
    by_path: dict[str, list[Need]] = {}
    for n in needs:
        by_path.setdefault(n.path, []).append(n)
    checks = []
    for path, wanted in by_path.items():
        have = set(granted.get(path, ()))
        missing = set().union(*(n.capabilities for n in wanted)) - have
        if "root" in have and "deny" not in have:
            missing = set()
        whys = ", ".join(dict.fromkeys(n.why for n in wanted))
        if missing:
            checks.append(Check(f"vault policy {path}", False,
                                f"token lacks {', '.join(sorted(missing))} on {path} (needed for {whys}); "
                                f"it has {', '.join(sorted(have)) or 'nothing'}",
                                "grant it in the token's policy (regwarden example vault-policy)"))
        else:
            checks.append(Check(f"vault policy {path}", True, f"{', '.join(sorted(have))} ({whys})"))
    return checks


# ------------------------------------------------------------------------------------ adapters


def _vault_checks(cfg: Config) -> list[Check]:
    from .errors import RegwardenError
    from .metrics import Metrics
    from .vault.client import VaultClient

    if cfg.vault is None:
        return []
    needs = required_capabilities(cfg)
    from prometheus_client import CollectorRegistry

    client = VaultClient(cfg.vault, Metrics(CollectorRegistry()))
    try:
        granted = client.capabilities_self(sorted({n.path for n in needs}))
    except RegwardenError as exc:
        denied = getattr(exc, "status", None) == 403
        return [Check("vault", False, f"{cfg.vault.address}: {exc}",
                      "grant update on sys/capabilities-self (the shipped policy does)" if denied
                      else "check [vault].address, the CA and the auth files")]
    finally:
        client.close()
    return [Check("vault", True, f"{cfg.vault.address} answered; logged in ({cfg.vault.auth.method})"),
            *missing_capabilities(needs, granted)]


def _docker_check(cfg: Config) -> list[Check]:
    if cfg.docker is None:
        return []
    import docker
    import docker.errors
    import requests

    try:
        client = docker.DockerClient(base_url=cfg.docker.host, version="auto",
                                     timeout=int(cfg.docker.timeout.total_seconds()))
        try:
            client.ping()
            version = client.version().get("Version", "?")
        finally:
            client.close()
    except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
        return [Check("docker", False, f"{cfg.docker.host}: {exc}",
                      "is dockerd running, and [docker].host its socket?")]
    return [Check("docker", True, f"{cfg.docker.host}: engine {version}")]


def _port_checks(cfg: Config) -> list[Check]:
    listeners: list[tuple[str, ListenAddress]] = [("daemon.listen", cfg.daemon.listen)]
    notifications = cfg.sources.registry_notifications
    if notifications is not None:
        listeners.append(("sources.registry_notifications.listen", notifications.listen))
    checks = []
    for what, address in listeners:
        host, _, port = str(address).rpartition(":")
        host = host.strip("[]")
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, int(port)))
        except OSError as exc:
            checks.append(Check(f"listen {what}", False, f"{address}: {exc.strerror or exc}",
                                "stop what holds the port (ss -ltnp), or choose another"))
        else:
            checks.append(Check(f"listen {what}", True, f"{address} is free"))
    return checks


def run_checks(config_path: Path, unit: Path) -> list[Check]:
    from .config import check_host, load_config
    from .errors import ConfigError

    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        return [Check("config", False, str(problem), "") for problem in exc.problems]
    problems = check_host(cfg, str(config_path))
    checks = [Check("config", not problems, str(p)) for p in problems] or [
        Check("config", True, f"{config_path} is valid")]
    checks += _docker_check(cfg) + _vault_checks(cfg) + _port_checks(cfg)
    try:
        sandbox = parse_unit(unit_files(unit))
    except OSError as exc:
        checks.append(Check("unit", False, f"{unit}: {exc.strerror or exc}",
                            "regwarden example unit > /etc/systemd/system/regwarden.service, or --unit PATH"))
    else:
        exists = {w.path: os.path.isdir(w.path) for w in sandbox.writable}
        checks += sandbox_checks(cfg, sandbox, exists)
    return checks


@click.command("doctor")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("/etc/regwarden/config.toml"), show_default=True, envvar="REGWARDEN_CONFIG",
              help="Config file.")
@click.option("--unit", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_UNIT,
              show_default=True, help="The installed unit file (its drop-ins are read too).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@click.option("--all", "show_all", is_flag=True, help="Also print the checks that passed.")
def doctor_command(config_path: Path, unit: Path, as_json: bool, show_all: bool) -> None:
    """Check what the service needs before `systemctl start`: config, Docker, Vault policy, ports, sandbox."""
    import json
    import sys

    checks = run_checks(config_path, unit)
    problems = [c for c in checks if not c.ok]
    if as_json:
        click.echo(json.dumps({"ok": not problems, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        for c in checks if show_all else problems:
            click.echo(c.line())
        click.echo(f"{len(problems)} problems, {len(checks) - len(problems)} checks passed")
    sys.exit(1 if problems else 0)

