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
GAP_S = 0.005  # requests arrive steadily, as streams' decodes do (a burst is one batch either way)


def test_a_gil_holding_engine_on_the_loop_still_batches_across_streams(server_url: str) -> None:
    app = FakeASR.options(
        name="ASRModel",
        num_replicas=1,
        max_ongoing_requests=REQUESTS * 2,
        ray_actor_options={"num_cpus": 0},
        user_config={"max_batch_size": REQUESTS, "batch_wait_timeout_s": 0.02, "decode_in": "loop"},
    ).bind(0.08, 0.001, True)  # 80 ms + 1 ms a row of spinning per batch
    handle = serve.run(app, name="spinning", route_prefix=None)
    try:
        audio = np.zeros(16000, dtype=np.float32)
        pending = []
        for i in range(REQUESTS):
            pending.append(handle.transcribe.remote(DecodeRequest(audio, offset=float(i))))
            time.sleep(GAP_S)  # pacing the sender, not waiting on a condition
        hyps = [r.result(timeout_s=60) for r in pending]
        # every request answered with its own words (one per whole second of its stream time)
        assert [h.words[0].text for h in hyps] == [f" w{i}." for i in range(REQUESTS)]
        stats = handle.stats.remote().result()
        assert stats["decode_in"] == "loop"
        # measured here: the loop 7 batches of these 128 requests; a worker thread, 19 (its
        # spinning let ~7 in per batch where 18 had arrived)
        assert sum(stats["batches"]) == REQUESTS and len(stats["batches"]) <= 11, stats["batches"]
    finally:
        serve.delete("spinning")
