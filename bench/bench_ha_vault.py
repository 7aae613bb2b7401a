"""Vault load of a fleet on the 3-node OpenBao cluster: steady state vs the load model, and the minute
after a node was sealed for 60 s (does the fleet stampede the cluster when it comes back?).

N `regwarden run` processes share one rotated credential (htpasswd provider, `rotate_every = 24h`, so
each host does the watch and the due check: 2 metadata reads per watch_interval) and list every node of
the cluster, each in a different order. Requests are counted on the client side from every instance's
`/metrics`: `regwarden_vault_requests_total` (one per logical request) plus
`regwarden_vault_node_failures_total` (each attempt a node failed, before the client moved on).

Phases of `--phase` seconds each: steady, node 0 sealed, recovery (node 0 unsealed). The model is
N x 2 / watch_interval requests/s (root token: no renewals).

    python bench/bench_ha_vault.py --instances 50 --watch-interval 15s --phase 60
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.integration.harness import OpenBaoCluster, RegistryServer, running, secret_file  # noqa: E402
from tests.integration.rotation.test_fleet import Instance, fleet_host  # noqa: E402

_SAMPLE = re.compile(r"^regwarden_vault_(requests_total|node_failures_total)\{[^}]*\} ([0-9.e+]+)$", re.M)


def sent(instances: list[tuple[Instance, int]]) -> float:
    """Requests the fleet sent to Vault so far (logical requests + failed attempts on a node)."""
    total = 0.0
    for _, port in instances:
        try:
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except requests.RequestException:
            continue
        total += sum(float(value) for _, value in _SAMPLE.findall(text))
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--watch-interval", default="15s")
    parser.add_argument("--phase", type=float, default=60.0)
    args = parser.parse_args()
    watch = float(args.watch_interval.rstrip("s"))
    with tempfile.TemporaryDirectory(prefix="bench-ha-") as tmp:
        root = Path(tmp)
        (root / "registry").mkdir()
        with running(OpenBaoCluster(root / "cluster")) as cluster, running(RegistryServer(root / "registry")) as reg:
            token = secret_file(root / "token", cluster.token)
            fleet: list[tuple[Instance, int]] = []
            for index in range(args.instances):
                nodes = cluster.addresses[index % 3:] + cluster.addresses[:index % 3]
                host = fleet_host(root / f"host-{index}", index, vault=nodes, token=token,
                                  dockerd=SimpleNamespace(host="unix:///nonexistent.sock"),  # type: ignore[arg-type]
                                  registry=reg, name="bench", rotate_every="24h",
                                  watch_interval=args.watch_interval, overlap=f"{2 * watch + 5:g}s")
                port = int(re.search(r'listen = "127.0.0.1:(\d+)"', host.config.read_text()).group(1))  # type: ignore[union-attr]
                host.start()
                fleet.append((host, port))
            try:
                time.sleep(max(30.0, 2 * watch))  # start-up, first rotation, first apply
                rates = {}
                for phase, action in (("steady", None), ("sealed", lambda: cluster.seal(0)),
                                      ("recovery", lambda: cluster.unseal(0))):
                    if action is not None:
                        action()
                    start, began = sent(fleet), time.monotonic()
                    time.sleep(args.phase)
                    rates[phase] = (sent(fleet) - start) / (time.monotonic() - began)
                model = args.instances * 2 / watch
                print(json.dumps({"instances": args.instances, "watch_interval_s": watch,
                                  "model_rps": round(model, 2), **{k: round(v, 2) for k, v in rates.items()},
                                  "recovery_vs_steady": round(rates["recovery"] / rates["steady"], 2),
                                  "steady_vs_model": round(rates["steady"] / model, 3)}))
            finally:
                for host, _ in fleet:
                    host.stop()


if __name__ == "__main__":
    main()
