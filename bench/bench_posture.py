"""What one posture run of a registry costs: wall time, connections, requests and memory.

Real endpoints on loopback: distribution 2.8 with htpasswd over plain HTTP (`http`), and nginx in front
of it with TLS 1.2/1.3 and ECDHE-AEAD ciphers only (`tls-modern`), or TLS 1.0-1.2 with every cipher at
`@SECLEVEL=0` and a self-signed leaf (`tls-legacy`, the worst case: every weak cipher is found one
handshake at a time). Each registry is checked `--runs` times with `check_registry` (what the daemon's
posture job calls), default logins tried on every run (the daemon tries them once per interval).
TLS scan connections are counted at `socket.create_connection` (the HTTP checks go through urllib3's own
connections), HTTP requests at `requests.Session.send`.

    python bench/bench_posture.py --runs 20
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.integration.harness import RegistryServer, free_port, make_certificates, running  # noqa: E402
from tests.integration.posture.test_posture import LEGACY_TLS, MODERN_TLS, TlsFront, self_signed_rsa  # noqa: E402

from regwarden.config import parse_config  # noqa: E402
from regwarden.posture.report import check_registry  # noqa: E402

COUNTS: Counter[str] = Counter()
_connect = socket.create_connection
_send = requests.Session.send


def _counting_connect(*args: Any, **kwargs: Any) -> socket.socket:
    COUNTS["connections"] += 1
    return _connect(*args, **kwargs)


def _counting_send(self: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
    COUNTS["requests"] += 1
    return _send(self, request, **kwargs)


def measure(name: str, url: str, ca: Path, runs: int) -> dict[str, Any]:
    cfg = parse_config({"daemon": {"state_dir": "/tmp/bench-posture"},
                        "registries": [{"name": name, "url": url, "ca_cert": str(ca), "expect_auth": True,
                                        "check_default_credentials": True, "expected_exposure": "loopback"}],
                        "posture": {"timeout": "3s"}})
    reg = cfg.registries[0]
    times, findings = [], set()
    COUNTS.clear()
    for _ in range(runs):
        began = time.perf_counter()
        report = check_registry(reg, cfg.posture, tls_warning_seconds=14 * 86400,
                                login_attempts=cfg.default_login_attempts, try_default_logins=True)
        times.append(time.perf_counter() - began)
        assert not report.errors, report.errors
        findings = {o.check for o in report.findings}
    return {"registry": name, "runs": runs, "median_ms": round(statistics.median(times) * 1000, 1),
            "max_ms": round(max(times) * 1000, 1), "tls_connections_per_run": COUNTS["connections"] / runs,
            "http_requests_per_run": COUNTS["requests"] / runs, "findings": sorted(findings)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    socket.create_connection = _counting_connect  # type: ignore[assignment]
    requests.Session.send = _counting_send  # type: ignore[method-assign]
    work = Path(tempfile.mkdtemp(prefix="bench-posture-"))
    certs = make_certificates(work / "pki", "127.0.0.1", days=60)
    self_cert, self_key = self_signed_rsa(work)
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rows = []
    (work / "registry").mkdir()
    with running(RegistryServer(work / "registry", auth=True)) as registry:
        registry.add_user("admin", "not-a-default")
        rows.append(measure("http", registry.url, certs.ca, args.runs))
        for name, cert, key, tls in (("tls-modern", certs.server_cert, certs.server_key, MODERN_TLS),
                                     ("tls-legacy", self_cert, self_key, LEGACY_TLS)):
            front = TlsFront(work / name, registry.host_port, free_port())
            front.workdir.mkdir()
            front.configure("127.0.0.1", cert, key, tls)
            with running(front):
                rows.append(measure(name, f"https://127.0.0.1:{front.port}", certs.ca, args.runs))
    rss_end = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for row in rows:
        print(json.dumps(row))
    print(json.dumps({"max_rss_kib_before": rss_start, "max_rss_kib_after": rss_end,
                      "runs_total": args.runs * len(rows)}))


if __name__ == "__main__":
    main()
