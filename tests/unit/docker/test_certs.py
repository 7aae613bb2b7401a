"""certs.d client certificates: versioned directories behind one atomically replaced symlink."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from regwarden.credentials.model import CredentialSecret
from regwarden.docker.certs import (
    CertsDirTarget,
    carried_files,
    client_certificate_pem,
    prune_candidates,
)

LEAF = "-----BEGIN CERTIFICATE-----\nLEAF{n}\n-----END CERTIFICATE-----"
ROOT = "-----BEGIN CERTIFICATE-----\nROOT\n-----END CERTIFICATE-----"


def secret(n: int) -> CredentialSecret:
    return CredentialSecret("pki", n, certificate=LEAF.format(n=n), private_key=f"KEY-{n}-0123456789",
                            ca_chain=ROOT)


@pytest.mark.parametrize(("names", "writes_ca", "carried"), [
    (["ca.crt", "client.cert", "client.key", "extra.crt", "README"], True, ["README", "extra.crt"]),
    (["ca.crt", "client.cert", "client.key"], False, ["ca.crt"]),
    (["old.cert", "old.key", "other-ca.crt", ".hidden"], True, ["other-ca.crt"]),
    ([], True, []),
])
def test_carried_files(names: list[str], writes_ca: bool, carried: list[str]) -> None:
    """CA files and other files are carried into new versions; client pairs never (Docker would offer them)."""
    assert carried_files(names, writes_ca=writes_ca) == carried


@pytest.mark.parametrize(("names", "keep", "now", "pruned"), [
    (["v1.100", "v2.200", "v3.300", "original"], set(), 1000, ["v1.100"]),
    (["v1.100", "v2.200", "v3.300"], {"v1.100"}, 1000, []),
    (["v9.100", "v10.200", "v11.300", "v12.400"], set(), 1000, ["v9.100", "v10.200"]),
    (["v9.100", "v10.200", "v11.300", "v12.400"], set(), 250, ["v9.100"]),
    (["v1.100", "v2.200", "v3.300"], set(), 210, []),
    (["v1.100", "v2.200"], set(), 1000, []),
    (["v1.100", "junk", "v2.x"], set(), 1000, []),
])
def test_prune_candidates(names: list[str], keep: set[str], now: int, pruned: list[str]) -> None:
    """Beyond the two newest and the current, a version is pruned once replaced longer than the grace ago."""
    assert prune_candidates(names, keep=keep, now_ns=now, grace_ns=20) == pruned


def test_client_certificate_pem_appends_the_chain_once() -> None:
    """The cert file holds the leaf then its chain, without repeating the leaf."""
    s = CredentialSecret("p", 1, certificate=LEAF.format(n=1), private_key="k" * 8,
                         ca_chain=LEAF.format(n=1) + "\n" + ROOT)
    assert client_certificate_pem(s) == LEAF.format(n=1) + "\n" + ROOT + "\n"


def _files(path: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(path.iterdir())}


def test_apply_makes_a_symlink_to_a_complete_version(tmp_path: Path) -> None:
    """After apply, certs.d/<host:port> is a relative symlink to a directory with cert, key and CA."""
    ca = tmp_path / "server-ca.pem"
    ca.write_text("SERVER-CA\n")
    certs = tmp_path / "certs.d"
    target = CertsDirTarget(certs, "reg:5443", ca_cert=ca)
    target.apply(secret(1))
    link = certs / "reg:5443"
    assert link.is_symlink() and not os.readlink(link).startswith("/")
    assert _files(link) == {"ca.crt": "SERVER-CA\n", "client.cert": client_certificate_pem(secret(1)),
                            "client.key": "KEY-1-0123456789\n"}
    assert (link / "client.key").stat().st_mode & 0o777 == 0o600
    assert target.holds(secret(1)) and not target.holds(secret(2))


def test_versions_are_kept_for_rollback_and_pruned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each apply makes a new directory; the current and previous are kept, older ones pruned."""
    monkeypatch.setattr("regwarden.docker.certs.PRUNE_GRACE_NS", 0)
    target = CertsDirTarget(tmp_path / "certs.d", "reg:5443")
    for n in (1, 2, 3, 4):
        target.apply(secret(n))
    versions = sorted(p.name.split(".")[0] for p in target.store.iterdir())
    assert versions == ["v3", "v4"]
    assert target.holds(secret(4))


def test_restore_to_previous_reuses_its_kept_directory(tmp_path: Path) -> None:
    """Rolling back to the previous version points the link at its existing directory."""
    target = CertsDirTarget(tmp_path / "certs.d", "reg:5443")
    target.apply(secret(1))
    kept = os.readlink(target.path)
    snapshot = target.snapshot()
    target.apply(secret(2))
    target.restore(snapshot, secret(1))
    assert os.readlink(target.path) == kept and target.holds(secret(1))


def test_existing_real_directory_is_migrated_and_restorable(tmp_path: Path) -> None:
    """A real certs.d/<host:port> keeps its CA files in every version, and is put back by a rollback."""
    certs = tmp_path / "certs.d"
    real = certs / "reg:5443"
    real.mkdir(parents=True)
    (real / "ca.crt").write_text("THEIR-CA\n")
    (real / "old.cert").write_text("OLD-CERT\n")
    (real / "old.key").write_text("OLD-KEY\n")
    target = CertsDirTarget(certs, "reg:5443")
    snapshot = target.snapshot()
    target.apply(secret(1))
    assert real.is_symlink()
    assert set(_files(real)) == {"ca.crt", "client.cert", "client.key"}
    assert (real / "ca.crt").read_text() == "THEIR-CA\n"
    target.restore(snapshot, None)
    assert not real.is_symlink() and real.is_dir()
    assert _files(real) == {"ca.crt": "THEIR-CA\n", "old.cert": "OLD-CERT\n", "old.key": "OLD-KEY\n"}


def test_restore_of_absent_removes_the_link(tmp_path: Path) -> None:
    """With no previous version and nothing there before, a rollback removes what the apply added."""
    target = CertsDirTarget(tmp_path / "certs.d", "reg:5443")
    snapshot = target.snapshot()
    target.apply(secret(1))
    target.restore(snapshot, None)
    assert not target.path.exists() and not target.path.is_symlink()
