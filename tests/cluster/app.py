"""The cluster tier's app: the shipped ``ray_config.yaml`` (placement by the ``ingress`` and
``asr`` resources, the autoscaling policy) with a stand-in model in the real ``ASRModel``.

The stand-in (:class:`FakeEngine`) costs sleep, not CPU: the tier runs four raylets on a
shared 2-core box, and what it tests is the serving plane (placement, node loss, scaling), which
the real Whisper model does not change; tests/e2e covers the real model.  Its words are a pure
function of stream time (one word ``wK.`` per whole second K), so a stream's transcript is
known in advance and a lost or repeated word shows.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import Application

from cluster.serve_config import deployment_layer, load_serve_config, merge
from deployments.app import AppArgs
from deployments.asr import ASRModel
from deployments.config import EngineConfig
from deployments.ingress import Ingress
from deployments.transcript import DecodeRequest, Hypothesis, Word

ROOT = Path(__file__).resolve().parents[2]
APP = "rayscribe"


class FakeEngine:
    """``base_s + per_request_s * len(batch)`` of sleep per batch, then one word per second.
    ``spin``: that long in a Python loop instead, holding the GIL as a GPU engine's host work
    (kernel launches, the token loop) does."""

    device = "fake"
    encoder_precision = "none"  # no model

    def __init__(self, base_s: float, per_request_s: float, spin: bool = False) -> None:
        self.base_s, self.per_request_s, self.spin = base_s, per_request_s, spin

    def observe_load(self, busy: float) -> None:
        """No precision to switch."""

    def transcribe(self, requests: list[DecodeRequest]) -> list[Hypothesis]:
        cost = self.base_s + self.per_request_s * len(requests)
        if self.spin:
            deadline = time.perf_counter() + cost
            while time.perf_counter() < deadline:
                pass
        else:
            time.sleep(cost)
        return [self._words(r) for r in requests]

    @staticmethod
    def _words(r: DecodeRequest) -> Hypothesis:
        end = r.offset + len(r.audio) / 16000
        first = int(r.offset) if r.offset == int(r.offset) else int(r.offset) + 1
        return Hypothesis(
            [Word(f" w{k}.", k + 0.1, k + 0.9) for k in range(first, int(end + 0.1)) if k + 0.9 <= end]
        )


def expected_text(seconds: int) -> str:
    return " ".join(f"w{k}." for k in range(seconds))


class FakeASRModel(ASRModel.func_or_class):  # type: ignore[name-defined,misc]
    def __init__(self, base_s: float = 0.1, per_request_s: float = 0.15, spin: bool = False) -> None:
        self.cost = (base_s, per_request_s)
        self.spin = spin
        super().__init__()

    def load_engine(self, config: EngineConfig) -> Any:
        return FakeEngine(*self.cost, spin=self.spin)


FakeASR = serve.deployment(FakeASRModel)


def build(redis_url: str, asr: dict[str, Any], cost: tuple[float, float] = (0.1, 0.15)) -> Application:
    """The app of ``ray_config.yaml`` as shipped (placement, CPUs) with ``asr`` over the
    ASRModel deployment.  Serve runs before it (the conftest: one proxy, HeadOnly, since every
    node of this cluster shares one address)."""
    cfg = load_serve_config(ROOT / "ray_config.yaml", [deployment_layer(APP, {"ASRModel": asr})])
    app = cfg.applications[0]
    options = app.options()
    # loopback only, like the local layer: this tier tests placement and faults, not API keys
    ingress = {"store": {"url": redis_url}, "auth": {"mode": "off"}}
    args = AppArgs.model_validate(merge(app.args, {"ingress": ingress}))
    model = FakeASR.options(name="ASRModel", **options["ASRModel"]).bind(*cost)
    bound: Application = Ingress.options(**options["Ingress"]).bind(model, args.ingress.model_dump())
    return bound
