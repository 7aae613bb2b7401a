"""`regwarden audit verify | tail | query` on real chained files."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from regwarden.audit.chain import AuditWriter
from regwarden.cli import main
from regwarden.events import Actor, Event, Target

T0 = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)


def _event(i: int, kind: str, user: str, repository: str, registry: str = "internal",
           address: str | None = None) -> Event:
    return Event(source="registry-notify", kind=kind, time=T0.replace(minute=i), observed=T0, host="h1",
                 actor=Actor(user=user, addr=f"10.0.0.{i}:5000"),
                 target=Target(registry=registry, repository=repository, tag=str(i), address=address),
                 outcome="success")


EVENTS = [
    _event(1, "image.push", "alice", "team/app"),
    _event(2, "image.pull", "bob", "team/app", address="reg:5000"),
    _event(3, "image.pull", "alice", "other/db", registry="reg.other:5000"),  # a record without address
    _event(4, "auth.failure", "mallory", "team/app"),
    _event(5, "container.start", "carol", "team/web"),
]


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    log = tmp_path / "audit.jsonl"
    writer = AuditWriter(log, fsync_interval=0)
    for event in EVENTS:
        writer.append(event.record())
    writer.close()
    config = tmp_path / "config.toml"
    config.write_text(f'[daemon]\nstate_dir = "{tmp_path}/state"\naudit_log = "{log}"\n')
    return config, log


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_verify_default_files_from_config(setup: tuple[Path, Path]) -> None:
    """Without FILE, verify reads the config's audit_log and passes a clean chain with exit 0."""
    config, _ = setup
    code, out, _ = run("audit", "verify", "-c", str(config))
    assert code == 0 and out.startswith("OK: 5 records, seq 1..5, 1 file(s)")


def test_verify_broken_exits_1_and_names_the_record(setup: tuple[Path, Path]) -> None:
    """A broken chain exits 1 and names file, line, seq and why."""
    _, log = setup
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join([lines[0], lines[2], lines[3], lines[4]]))
    code, _, err = run("audit", "verify", str(log))
    assert code == 1
    assert f"BROKEN: {log}:2 (seq 3): deleted: seq 2 missing (seq gap)" in err


def test_verify_json(setup: tuple[Path, Path]) -> None:
    """--json prints the result object."""
    _, log = setup
    code, out, _ = run("audit", "verify", "--json", str(log))
    data = json.loads(out)
    assert code == 0 and data["ok"] is True and data["records"] == 5 and data["broken"] is None


def test_verify_with_hmac_key_file(tmp_path: Path) -> None:
    """--hmac-key-file verifies a keyed chain."""
    log = tmp_path / "audit.jsonl"
    writer = AuditWriter(log, key=b"k3y-material", fsync_interval=0)
    writer.append(EVENTS[0].record())
    writer.close()
    key = tmp_path / "key"
    key.write_bytes(b"k3y-material\n")
    assert run("audit", "verify", "--hmac-key-file", str(key), str(log))[0] == 0
    assert run("audit", "verify", str(log))[0] == 1


def test_tail_shows_the_last_records(setup: tuple[Path, Path]) -> None:
    """tail -n 2 prints the last two records, one line each."""
    config, _ = setup
    code, out, _ = run("audit", "tail", "-n", "2", "-c", str(config))
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2
    assert "auth.failure" in lines[0] and "mallory@10.0.0.4:5000" in lines[0]
    assert "container.start" in lines[1] and "internal/team/web:5" in lines[1]


def test_tail_json(setup: tuple[Path, Path]) -> None:
    """tail --json prints the records as JSON lines, chain fields included."""
    _, log = setup
    out = run("audit", "tail", "-n", "1", "--json", str(log))[1]
    record = json.loads(out)
    assert record["seq"] == 5 and record["kind"] == "container.start" and len(record["hash"]) == 64


@pytest.mark.parametrize(("args", "seqs"), [
    (["--kind", "image.*"], [1, 2, 3]),
    (["--kind", "image.push", "--kind", "auth.failure"], [1, 4]),
    (["--actor", "alice"], [1, 3]),
    (["--actor", "10.0.0.5:*"], [5]),
    (["--repository", "team/*"], [1, 2, 4, 5]),
    (["--registry", "internal"], [1, 2, 4, 5]),
    (["--registry", "reg:5000"], [2]),
    (["--registry", "REG*"], [2, 3]),
    (["--since", "2026-11-27T07:03:00Z"], [3, 4, 5]),
    (["--until", "2026-11-27T07:03:00Z"], [1, 2]),
    (["--since", "2026-11-27T07:02:00Z", "--until", "2026-11-27T07:04:00Z", "--actor", "alice"], [3]),
    (["--until", "1000d"], []),
    (["--since", "1000d"], [1, 2, 3, 4, 5]),
])
def test_query_filters(setup: tuple[Path, Path], args: list[str], seqs: list[int]) -> None:
    """query filters by kind, actor, repository, registry (name or address) and time (globs and
    durations allowed)."""
    config, _ = setup
    code, out, _ = run("audit", "query", "-c", str(config), "--json", *args)
    assert code == 0
    assert [json.loads(line)["seq"] for line in out.splitlines()] == seqs


def test_query_table_is_human(setup: tuple[Path, Path]) -> None:
    """Without --json, query prints a table and the count."""
    config, _ = setup
    code, out, err = run("audit", "query", "-c", str(config), "--kind", "auth.failure")
    assert code == 0 and "mallory" in out and "failure" in out and "1 record(s)" in err


def test_query_bad_time_is_a_usage_error(setup: tuple[Path, Path]) -> None:
    """An unreadable --since is refused with the option named."""
    config, _ = setup
    code, _, err = run("audit", "query", "-c", str(config), "--since", "yesterday-ish")
    assert code == 2 and "--since" in err
