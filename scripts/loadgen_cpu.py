"""Load-generator CPU per stream against the cheap fake server (tests/unit/fake_server.py).

    flock /tmp/rayscribe-heavy.lock python scripts/loadgen_cpu.py new:100 old:100 new:200 procs2:200

new: the pacer generator (ingest.loadtest.play_streams); old: one SDK stream_file per stream;
procsK: run_load over K processes.  Prints CPU cores used, per 100 streams, and frame lateness.
"""

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import websockets

from ingest.client import stream_file
from ingest.loadtest import Clip, play_streams, run_load

CLIP = Path("ingest/samples/jfk.wav")


def late(rs):
    out = []
    for r in rs:
        t = np.array([at for _, at in r.sent])
        a = np.array([x for x, _ in r.sent])
        out.extend(t - (t[0] + a - a[0]))
    return np.percentile(out, 50), np.percentile(out, 99)


async def old(url, n):
    c0, w0 = time.process_time(), time.perf_counter()
    rs = await asyncio.gather(*(stream_file(url, CLIP) for _ in range(n)))
    return rs, (time.process_time() - c0) / (time.perf_counter() - w0)


def show(tag, n, rs, cpu):
    ok = sum(1 for r in rs if r.summary and not r.error)
    lags = [x for r in rs for x in r.commit_lags()]
    l50, l99 = late(rs)
    print(
        f"{tag:10s} n={n:4d}: cpu {cpu:.3f} core ({cpu / n * 100:.3f} core per 100 streams) ok={ok}/{n} "
        f"commit lag p95 {np.percentile(lags, 95):.3f}s "
        f"frame lateness p50 {l50 * 1000:.1f} ms p99 {l99 * 1000:.1f} ms",
        flush=True,
    )


async def main(plan):
    ports = [8765]
    srvs = [subprocess.Popen([sys.executable, "-m", "tests.unit.fake_server", str(p)]) for p in ports]
    urls = [f"ws://127.0.0.1:{p}" for p in ports]
    for url in urls:
        for _ in range(200):
            try:
                async with websockets.connect(url):
                    break
            except OSError:
                await asyncio.sleep(0.1)
    try:
        for mode, n in plan:
            url = urls[0]
            if mode == "new":
                rs, cpu = await play_streams(url, [CLIP] * n, 1.0)
                show("pacer", n, rs, cpu)
            elif mode == "old":
                rs, cpu = await old(url, n)
                show("sdk", n, rs, cpu)
            elif mode.startswith("procs"):
                k = int(mode[5:])
                rep, rs = await run_load(url, [Clip(CLIP, "x", 11.0)], n, procs=k)
                show(f"procs{k}", n, rs, sum(rep.generator_cpu))
                print("   per process:", [round(c, 3) for c in rep.generator_cpu], flush=True)
    finally:
        for s in srvs:
            s.terminate()
            s.wait()


if __name__ == "__main__":
    plan = [(a.split(":")[0], int(a.split(":")[1])) for a in sys.argv[1:]]
    asyncio.run(main(plan))
