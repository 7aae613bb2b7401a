#!/usr/bin/env python3
"""A stand-in vulnerability scanner: no scanner with a vulnerability database runs offline here.

`fake_trivy.py RUNS_DIR REPOSITORY DIGEST` prints a report in Trivy's published JSON schema
(SchemaVersion 2) and appends a line to RUNS_DIR/runs. What it does depends on the repository's first
path segment: `vuln` one CRITICAL and one LOW finding; `hang` sleeps; `fail` exits 3; `garbage` prints
non-JSON; `flood` prints without end; `stopped` hangs on its first run for an image and reports like
`vuln` on the next; anything else a clean report.
"""

import json
import sys
import time

runs, repository, digest = sys.argv[1], sys.argv[2], sys.argv[3]
with open(f"{runs}/runs", "a") as log:
    log.write(f"{repository}@{digest}\n")
with open(f"{runs}/runs") as log:
    earlier = log.read().splitlines().count(f"{repository}@{digest}") - 1
kind = repository.split("/", 1)[0]
if kind == "stopped":
    if not earlier:
        time.sleep(3600)
    kind = "vuln"
if kind == "hang":
    time.sleep(3600)
if kind == "fail":
    print("FATAL: database not found", file=sys.stderr)
    sys.exit(3)
if kind == "garbage":
    print("<html>not a report</html>")
    sys.exit(0)
if kind == "flood":
    while True:
        sys.stdout.write("x" * 65536)
vulns = [
    {"VulnerabilityID": "CVE-2024-0001", "PkgName": "busybox", "InstalledVersion": "1.35.0",
     "FixedVersion": "1.36.1", "Severity": "CRITICAL", "Title": "remote code execution"},
    {"VulnerabilityID": "CVE-2024-0002", "PkgName": "busybox", "InstalledVersion": "1.35.0",
     "Severity": "LOW", "Title": "minor"},
] if kind == "vuln" else None
print(json.dumps({"SchemaVersion": 2, "ArtifactName": f"{repository}@{digest}", "ArtifactType": "container_image",
                  "Results": [{"Target": f"{repository} (debian 12.5)", "Class": "os-pkgs", "Type": "debian",
                               "Vulnerabilities": vulns}]}))
