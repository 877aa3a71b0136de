"""Timing of the real NOIRLab Data Lab client (run by bench/spectra_bench.py --datalab inside
the loopback-only namespace of tests/datalab_harness.py, with astro-datalab's interpreter).

Usage: ``python datalab_client_bench.py PLAN.json OUT.json``.  The client is logged in (HOME
holds ``dl.conf`` and ``id_token.<user>`` with the service token), as a user of a private
service would be; nothing of ifu-extract is imported.
"""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

plan = json.loads(Path(sys.argv[1]).read_text())
home = Path(os.environ["HOME"]) / ".datalab"
home.mkdir(parents=True, exist_ok=True)
(home / "dl.conf").write_text("[login]\nstatus = loggedin\nuser = bench\nauthtoken = \n")
(home / "id_token.bench").write_text(plan["token"])

from dl import specClient  # noqa: E402

specClient.set_svc_url(plan["url"])
ids = [int(i) for i in plan["ids"]]
res = {}
specClient.getSpec(ids[:100], align=True, cutout=plan["cutout"])  # warm-up
times = []
for _ in range(plan["repeat"]):
    t0 = time.perf_counter()
    data = specClient.getSpec(ids, align=True, cutout=plan["cutout"])
    times.append(time.perf_counter() - t0)
res["bulk_s"] = float(np.median(times))
res["bulk_shape"] = list(data.shape)
res["bulk_flux_sum"] = float(np.nansum(data["flux"], dtype=np.float64))
per = ids[:plan["per_id"]]
t0 = time.perf_counter()
for i in per:
    one = specClient.getSpec(i)
res["per_id_s"] = time.perf_counter() - t0
res["per_id_n"] = len(per)
res["per_id_len"] = int(len(one))
Path(sys.argv[2]).write_text(json.dumps(res))
