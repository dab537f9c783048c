"""A GPU engine's host work holds the GIL: run in a worker thread it starved the replica's
event loop, and through Serve 200 streams on one H200 decoded batches of ~2 rows while
requests waited ~3 s to be let in (README, GPU sixth pass).  With ``decode_in: loop`` (the
default on a GPU) requests queue in Ray while a batch runs and the next batch takes them.

A stand-in engine that spins the CPU for each batch, as that host work does, in a real Serve
replica of the ASR deployment; requests through a real deployment handle."""

from __future__ import annotations

import time

import numpy as np
from ray import serve

from deployments.transcript import DecodeRequest
from tests.cluster.app import FakeASR

REQUESTS = 128
BATCH_S = 0.08  # the stand-in's spin per batch (plus 1 ms a row)
GAP_S = 0.005  # requests arrive steadily, as streams' decodes do (a burst is one batch either way)


def test_a_gil_holding_engine_on_the_loop_still_batches_across_streams(server_url: str) -> None:
    app = FakeASR.options(
        name="ASRModel",
        num_replicas=1,
        max_ongoing_requests=REQUESTS * 2,
        ray_actor_options={"num_cpus": 0},
        user_config={"max_batch_size": REQUESTS, "batch_wait_timeout_s": 0.02, "decode_in": "loop"},
    ).bind(BATCH_S, 0.001, True)
    handle = serve.run(app, name="spinning", route_prefix=None)
    try:
        audio = np.zeros(16000, dtype=np.float32)
        pending = []
        started = time.perf_counter()
        for i in range(REQUESTS):
            pending.append(handle.transcribe.remote(DecodeRequest(audio, offset=float(i))))
            time.sleep(GAP_S)  # pacing the sender, not waiting on a condition
        sending_s = time.perf_counter() - started
        hyps = [r.result(timeout_s=60) for r in pending]
        # every request answered with its own words (one per whole second of its stream time)
        assert [h.words[0].text for h in hyps] == [f" w{i}." for i in range(REQUESTS)]
        stats = handle.stats.remote().result()
        assert stats["decode_in"] == "loop"
        # each batch spins >= BATCH_S, so a replica that lets in what arrived meanwhile runs at
        # most one batch per BATCH_S of sending, and two around it (measured here: 7 batches in
        # ~0.7 s of sending, bound 11; a worker thread, 19: its spinning kept arrivals out)
        bound = int(sending_s / BATCH_S) + 2
        assert sum(stats["batches"]) == REQUESTS and len(stats["batches"]) <= bound, (stats["batches"], bound)
        assert stats["decodes"] == REQUESTS  # the count the serving bench's cadence reads
    finally:
        serve.delete("spinning")
