"""`regwarden audit verify | tail | query`: read the audit trail (never writes it).

Without FILE arguments the commands read the config's `daemon.audit_log` and its rotated files
(`audit.jsonl.N` ... `audit.jsonl.1`, `audit.jsonl`), oldest first.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from ..cli import config_option, echo_json, json_option, load_or_exit
from .chain import chain_files, chain_index, verify

if TYPE_CHECKING:
    from .witness import WitnessReport

__all__ = ["audit"]


@click.group()
def audit() -> None:
    """Verify, follow and search the tamper-evident audit trail."""
    from ..logging import configure_logging

    configure_logging("console", "warning")  # on stderr: stdout is the commands' output (--json)


def _default_files(config_path: Path) -> tuple[Path, list[Path]]:
    cfg = load_or_exit(config_path, host_checks=False)
    path: Path = cfg.daemon.audit_log
    return path, chain_files(path)


def _verify_key(key_file: Path | None, config_path: Path, config_needed: bool) -> bytes | None:
    """--hmac-key-file, else the key in Vault when the config names one (`audit.hmac_key_vault_path`)."""
    if key_file is not None:
        key = key_file.read_bytes().strip()
        if not key:
            raise click.UsageError(f"{key_file}: the HMAC key file is empty")
        return key
    if not config_needed and not config_path.exists():
        return None
    cfg = load_or_exit(config_path, host_checks=False)
    location = cfg.audit.hmac_key_vault_path
    if not location:
        return None
    if cfg.vault is None:
        click.echo(f"{config_path}: audit.hmac_key_vault_path needs a [vault] table", err=True)
        sys.exit(2)
    from ..errors import RegwardenError
    from ..metrics import Metrics
    from ..vault.client import VaultClient
    from .component import read_hmac_key

    client = VaultClient(cfg.vault, Metrics())
    try:
        return read_hmac_key(client, location)
    except RegwardenError as exc:
        click.echo(f"cannot read the audit HMAC key from Vault ({location}): {exc}", err=True)
        sys.exit(2)
    finally:
        client.close()


@audit.command("verify")
@config_option
@click.option("--hmac-key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="File holding the chain's HMAC key; default: read from Vault when the config sets"
                   " audit.hmac_key_vault_path.")
@click.option("--witness", is_flag=True,
              help="Also compare the trail with the chain heads this host wrote to Vault (audit.witness_path).")
@click.option("--host", "witness_host", help="With --witness: whose heads (default: the config's daemon.host).")
@click.option("--witness-since", help="With --witness: only heads Vault stored since this ISO time or duration "
                                      "ago (7d): for trails whose older files were archived.")
@click.option("--vault-token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="With --witness: read Vault with this token (an auditor's, with read on the heads) "
                   "instead of the config's [vault].auth.")
@json_option
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def verify_command(config_path: Path, hmac_key_file: Path | None, witness: bool, witness_host: str | None,
                   witness_since: str | None, vault_token_file: Path | None, as_json: bool,
                   files: tuple[Path, ...]) -> None:
    """Check the hash chain of FILE... (oldest first); exit 1 naming the first broken record.

    With --witness, exit 1 also when the trail no longer holds a head witnessed in Vault (truncated,
    re-chained, rolled back, rotated file deleted), naming the first seq that no longer matches.
    """
    paths = list(files) if files else _default_files(config_path)[1]
    if not paths:
        click.echo("no audit log files found", err=True)
        sys.exit(2)
    started = time.monotonic()
    result = verify(paths, key=_verify_key(hmac_key_file, config_path, config_needed=not files))
    report = (_witness_report(config_path, paths, witness_host, witness_since, vault_token_file)
              if witness else None)
    elapsed = time.monotonic() - started
    ok = result.ok and (report is None or report.ok)
    if as_json:
        out = {**result.as_dict(), "seconds": round(elapsed, 3)}
        if report is not None:
            out["witness"] = report.as_dict()
            out["ok"] = ok
        echo_json(out)
    else:
        if result.broken is not None:
            click.echo(f"BROKEN: {result.broken}", err=True)
            click.echo(f"{result.records} records before it verified", err=True)
        else:
            span = f"seq {result.first_seq}..{result.last_seq}" if result.records else "empty"
            anchor = "" if result.from_genesis else " (chain starts mid-way: older files not given)"
            click.echo(f"OK: {result.records} records, {span}, {len(paths)} file(s), "
                       f"last hash {result.last_hash}{anchor} [{elapsed:.2f}s]")
        if report is not None:
            _echo_witness(report)
    sys.exit(0 if ok else 1)


def _witness_report(config_path: Path, paths: list[Path], host: str | None, since: str | None,
                    token_file: Path | None) -> WitnessReport:
    from ..config import TokenAuth
    from ..errors import RegwardenError
    from ..metrics import Metrics
    from ..vault.client import VaultClient
    from .witness import compare, head_location, read_witnessed

    cfg = load_or_exit(config_path, host_checks=False)
    if cfg.vault is None:
        click.echo(f"{config_path}: --witness needs a [vault] table", err=True)
        sys.exit(2)
    vault_cfg = cfg.vault if token_file is None else \
        cfg.vault.model_copy(update={"auth": TokenAuth(method="token", token_file=token_file)})
    try:
        mount, path = head_location(cfg.audit.witness_path, host or cfg.daemon.hostname)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    moment = _when(since, "--witness-since")
    client = VaultClient(vault_cfg, Metrics())
    try:
        witnessed = read_witnessed(client, mount, path,
                                   since=None if moment is None else datetime.fromisoformat(moment))
    except RegwardenError as exc:
        click.echo(f"cannot read the witnessed chain heads from Vault ({mount}/{path}): {exc}", err=True)
        sys.exit(2)
    finally:
        client.close()
    wanted = [w.head.seq for w in witnessed if w.head is not None]
    return compare(chain_index(paths, wanted), witnessed)


def _echo_witness(report: WitnessReport) -> None:
    if not report.heads:
        click.echo("WITNESS: no chain heads in Vault for this host", err=True)
    for problem in report.problems:
        click.echo(f"WITNESS: {problem}", err=True)
    for m in report.mismatches:
        click.echo(f"WITNESS MISMATCH ({m.kind}) from seq {m.seq}: {m.why}", err=True)
    if report.ok and report.heads:
        assert report.newest is not None
        click.echo(f"WITNESS OK: {report.heads} head(s) since {report.oldest} match, newest seq "
                   f"{report.newest.seq} witnessed at {report.newest.time}")
    elif report.mismatches:
        through = "nothing" if report.matched_through is None else f"seq {report.matched_through}"
        click.echo(f"the trail matches the witness through {through}; first seq that no longer matches: "
                   f"{report.first_bad_seq}", err=True)


# --------------------------------------------------------------------------- reading records


def _records(paths: list[Path]) -> Iterator[dict[str, Any]]:
    for path in paths:
        with path.open("rb") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # verify reports these; reading goes on
                if isinstance(record, dict):
                    yield record


def format_record(record: dict[str, Any]) -> str:
    """One human line: time, kind, outcome/status, actor, target."""
    actor = record.get("actor") or {}
    target = record.get("target") or {}
    who = actor.get("user") or "-"
    if actor.get("addr"):
        who += f"@{actor['addr']}"
    what = "/".join(str(target[k]) for k in ("registry", "repository") if target.get(k)) or "-"
    if target.get("tag"):
        what += f":{target['tag']}"
    elif target.get("digest"):
        what += f"@{str(target['digest'])[:19]}"
    outcome = str(record.get("outcome", ""))
    if record.get("status") is not None:
        outcome += f" {record['status']}"
    return (f"{record.get('seq', ''):>8}  {record.get('time', '')}  {record.get('kind', ''):<18} "
            f"{outcome:<12} {who:<28} {what}")


def _emit(record: dict[str, Any], as_json: bool) -> None:
    click.echo(json.dumps(record, sort_keys=True) if as_json else format_record(record))


@audit.command("tail")
@config_option
@click.option("-n", "lines", type=click.IntRange(min=0), default=10, show_default=True,
              help="How many of the last records to show.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing records as they are written (follows rotation).")
@json_option
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
def tail_command(config_path: Path, lines: int, follow: bool, as_json: bool, file: Path | None) -> None:
    """Show the last records of the audit log (one line each; --json: the records as JSON lines)."""
    path = file if file is not None else _default_files(config_path)[0]
    if not path.exists() and not follow:
        click.echo(f"{path}: no such file", err=True)
        sys.exit(2)
    handle = path.open("rb") if path.exists() else None
    if handle is not None:
        last: deque[bytes] = deque(handle, maxlen=lines)  # leaves the handle at the end: -f goes on from there
        for line in last:
            with contextlib.suppress(ValueError):
                _emit(json.loads(line), as_json)
    if follow:
        _Follower(path, handle, as_json).run()
    elif handle is not None:
        handle.close()


class _Follower:
    """Polls for new lines; after a rotation (the path's inode changed) it finishes the old file, then
    reads the new one from its start."""

    def __init__(self, path: Path, handle: IO[bytes] | None, as_json: bool) -> None:
        self.path = path
        self.handle = handle
        self.inode = os.fstat(handle.fileno()).st_ino if handle is not None else None
        self.as_json = as_json
        self.pending = b""

    def run(self) -> None:
        try:
            while True:
                if (self.handle is None and not self._reopen()) or (not self._drain() and not self._rotated()):
                    time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        finally:
            if self.handle is not None:
                self.handle.close()

    def _reopen(self) -> bool:
        try:
            self.handle = self.path.open("rb")
        except FileNotFoundError:
            return False
        self.inode = os.fstat(self.handle.fileno()).st_ino
        self.pending = b""
        return True

    def _drain(self) -> bool:
        assert self.handle is not None
        chunk = self.handle.read()
        if not chunk:
            return False
        *complete, self.pending = (self.pending + chunk).split(b"\n")
        for line in complete:
            with contextlib.suppress(ValueError):
                _emit(json.loads(line), self.as_json)
        return True

    def _rotated(self) -> bool:
        try:
            same = self.path.stat().st_ino == self.inode
        except FileNotFoundError:
            same = False
        if same:
            return False
        assert self.handle is not None
        self._drain()  # what was appended before the rename
        self.handle.close()
        self.handle = None
        return True


# --------------------------------------------------------------------------- query


def _when(value: str | None, option: str) -> str | None:
    """An ISO time or a duration ago (`1h`, `30m`, `7d`) as the audit records' time text."""
    if value is None:
        return None
    from ..config import parse_duration

    try:
        moment = datetime.now(UTC) - parse_duration(value)
    except ValueError:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise click.BadParameter(f"{value!r}: expected an ISO time or a duration such as 1h",
                                     param_hint=option) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _matches(record: dict[str, Any], since: str | None, until: str | None, kinds: tuple[str, ...],
             actor: str | None, repository: str | None, registry: str | None) -> bool:
    stamp = str(record.get("time", ""))
    if (since is not None and stamp < since) or (until is not None and stamp >= until):
        return False
    if kinds and not any(fnmatch.fnmatchcase(str(record.get("kind", "")), k) for k in kinds):
        return False
    if actor is not None:
        who = record.get("actor") or {}
        if not any(fnmatch.fnmatchcase(str(who.get(k) or ""), actor) for k in ("user", "addr")):
            return False
    target = record.get("target") or {}
    if repository is not None and not fnmatch.fnmatchcase(str(target.get("repository") or ""), repository):
        return False
    if registry is not None:  # the configured name or the address (older records have only one)
        return any(fnmatch.fnmatchcase(str(target.get(k) or "").lower(), registry.lower())
                   for k in ("registry", "address"))
    return True


@audit.command("query")
@config_option
@click.option("--since", help="From this time on: ISO 8601 (2026-11-27T07:00:00Z) or a duration ago (1h).")
@click.option("--until", help="Before this time: ISO 8601 or a duration ago.")
@click.option("--kind", "kinds", multiple=True, help="Record kind, glob allowed (image.*); repeatable.")
@click.option("--actor", help="Actor user or address, glob allowed (alice, 10.0.0.*).")
@click.option("--repository", help="Target repository, glob allowed (team/*).")
@click.option("--registry", help="Target registry: its configured name or its host:port, glob allowed.")
@json_option
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def query_command(config_path: Path, since: str | None, until: str | None, kinds: tuple[str, ...],
                  actor: str | None, repository: str | None, registry: str | None, as_json: bool,
                  files: tuple[Path, ...]) -> None:
    """Search the audit trail (a table; --json: matching records as JSON lines)."""
    paths = list(files) if files else _default_files(config_path)[1]
    low, high = _when(since, "--since"), _when(until, "--until")
    shown = 0
    for record in _records(paths):
        if _matches(record, low, high, kinds, actor, repository, registry):
            _emit(record, as_json)
            shown += 1
    if not as_json:
        click.echo(f"{shown} record(s)", err=True)

