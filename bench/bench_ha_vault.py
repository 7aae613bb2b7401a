"""Vault load of a fleet on the 3-node OpenBao cluster: steady state vs the load model, and the minute
after a node was sealed for 60 s (does the fleet stampede the cluster when it comes back?).

N `regwarden run` processes share one rotated credential (htpasswd provider, `rotate_every = 24h`, so
each host does the watch and the due check: 2 metadata reads per watch_interval) and list every node of
the cluster, each in a different order. Requests are counted on the client side from every instance's
`/metrics`: `regwarden_vault_requests_total` (one per logical request) plus
`regwarden_vault_node_failures_total` (each attempt a node failed, before the client moved on).

Phases of `--phase` seconds each: steady, fault, recovery. `--fault seal` seals node 0 (`sys/seal`) and
unseals it for the recovery phase; `--fault stop` SIGSTOPs the active node (a partition: its port accepts,
nothing answers; the others elect a new leader) and SIGCONTs it for the recovery phase.

`--busy` makes every host's audit chain move: each host tails a registry log that gets one line per
second, so the audit witness writes its head once per `--witness-interval` (an idle host writes none).
The model is N x (2 / watch_interval + 1 / witness_interval when busy) requests/s (root token: no renewals).

    python bench/bench_ha_vault.py --instances 50 --watch-interval 15s --phase 60 --fault seal
    python bench/bench_ha_vault.py --instances 50 --watch-interval 15s --phase 60 --fault stop --busy
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.integration.harness import OpenBaoCluster, RegistryServer, running, secret_file  # noqa: E402
from tests.integration.rotation.test_fleet import Instance, fleet_host  # noqa: E402

# a real distribution 2.8 access line (../shared/samples): parsed, audited, chained
_LOG_LINE = ('{"go.version":"go1.19.8","http.request.method":"GET","http.request.remoteaddr":"127.0.0.1:50000",'
             '"http.request.uri":"/v2/","http.response.status":200,"level":"info","msg":"response completed",'
             '"time":"2026-11-27T07:09:49.1Z"}\n')
def sent(fleet: list[Instance]) -> float:
    """Requests the fleet sent to Vault so far (logical requests + failed attempts on a node)."""
    return sum(host.vault_requests() for host in fleet)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--watch-interval", default="15s")
    parser.add_argument("--phase", type=float, default=60.0)
    parser.add_argument("--fault", choices=["seal", "stop"], default="seal")
    parser.add_argument("--busy", action="store_true", help="every host's audit chain moves (witness writes)")
    parser.add_argument("--witness-interval", default="60s")
    args = parser.parse_args()
    watch = float(args.watch_interval.rstrip("s"))
    witness = float(args.witness_interval.rstrip("s"))
    with tempfile.TemporaryDirectory(prefix="bench-ha-") as tmp:
        root = Path(tmp)
        (root / "registry").mkdir()
        with running(OpenBaoCluster(root / "cluster")) as cluster, running(RegistryServer(root / "registry")) as reg:
            token = secret_file(root / "token", cluster.token)
            fleet: list[Instance] = []
            for index in range(args.instances):
                nodes = cluster.addresses[index % 3:] + cluster.addresses[:index % 3]
                host = fleet_host(root / f"host-{index}", index, vault=nodes, token=token,
                                  dockerd=SimpleNamespace(host="unix:///nonexistent.sock"),  # type: ignore[arg-type]
                                  registry=reg, name="bench", rotate_every="24h",
                                  watch_interval=args.watch_interval, overlap=f"{2 * watch + 5:g}s")
                log = host.workdir / "registry.log"
                log.touch()
                with host.config.open("a") as config:
                    config.write(f'\n[audit]\nwitness_interval = "{args.witness_interval}"\n')
                    if args.busy:
                        config.write(f'\n[[sources.registry_logs]]\npath = "{log}"\nregistry = "internal"\n'
                                     'poll_interval = "1s"\n')
                host.start()
                fleet.append(host)
            done = threading.Event()

            def write_logs() -> None:
                while args.busy and not done.wait(1.0):
                    for host in fleet:
                        with (host.workdir / "registry.log").open("a") as out:
                            out.write(_LOG_LINE)

            writer = threading.Thread(target=write_logs, daemon=True)
            writer.start()
            faulted: list[int] = []

            def fault() -> None:
                if args.fault == "seal":
                    cluster.seal(0)
                    faulted.append(0)
                else:
                    faulted.append(cluster.active())
                    cluster.pause(faulted[0])

            def recover() -> None:
                if args.fault == "seal":
                    cluster.unseal(0)
                else:
                    cluster.resume(faulted[0])

            try:
                time.sleep(max(30.0, 2 * watch, witness))  # start-up, first rotation, first apply, first head
                rates = {}
                for phase, action in (("steady", None), (args.fault, fault), ("recovery", recover)):
                    if action is not None:
                        action()
                    start, began = sent(fleet), time.monotonic()
                    time.sleep(args.phase)
                    rates[phase] = (sent(fleet) - start) / (time.monotonic() - began)
                model = args.instances * (2 / watch + (1 / witness if args.busy else 0))
                print(json.dumps({"instances": args.instances, "watch_interval_s": watch, "fault": args.fault,
                                  "faulted_node": faulted[0], "busy": args.busy, "witness_interval_s": witness,
                                  "model_rps": round(model, 2), **{k: round(v, 2) for k, v in rates.items()},
                                  "recovery_vs_steady": round(rates["recovery"] / rates["steady"], 2),
                                  "steady_vs_model": round(rates["steady"] / model, 3)}))
            finally:
                done.set()
                for host in fleet:
                    host.stop()


if __name__ == "__main__":
    main()
