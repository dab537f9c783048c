"""Stream a recording through the streaming policy in-process, with no server and no clock:
the same policy calls, in the same order, as :class:`~deployments.session.StreamSession`
makes, with every decode answered at once.  For accuracy work (streaming vs offline WER, lost
tails) that must not depend on timing; latency is measured against the real service.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from deployments.streaming import LocalAgreement, PolicyConfig
from deployments.transcript import DecodeRequest, Hypothesis, Word
from deployments.vad import StreamVad, VoiceTracker
from ingest.audio import TARGET_RATE

Transcribe = Callable[[list[DecodeRequest]], list[Hypothesis]]


@dataclass
class SimResult:
    words: list[Word]
    decodes: int
    decoded_audio_s: float  # audio seconds the encoder was given, summed over decodes
    endpoints: int
    # per word committed before the stream closed: audio that followed the word in the window
    # that committed it (decodes answered at once: the policy's share of the commit lag)
    commit_delays: list[float] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(w.text for w in self.words)


def decode_checked(
    la: LocalAgreement, decode: Callable[[DecodeRequest], Hypothesis], final: bool
) -> Hypothesis:
    """The session's ``_decode_checked``: the same steps (``LocalAgreement.checked``), each
    decode answered at once."""
    steps = la.checked(la.request(final=final), final)
    request = next(steps)
    while True:
        try:
            request = steps.send(decode(request))
        except StopIteration as done:
            hyp: Hypothesis = done.value
            return hyp


def simulate_stream(
    transcribe: Transcribe,
    audio: np.ndarray,
    policy: PolicyConfig | None = None,
    frame_s: float = 0.1,
    outage: tuple[float, float] | None = None,
) -> SimResult:
    """``outage``: stream seconds (from, to) in which no decode is answered, as while an ASR
    replica restarts: the audio piles up and the first decode after it sees all of it."""
    la = LocalAgreement(policy)
    vad = StreamVad() if la.config.vad.enabled else None
    if vad is not None:
        la.voice = VoiceTracker(la.config.vad)
    words: list[Word] = []
    decodes = endpoints = 0
    decoded_s = 0.0
    delays: list[float] = []

    def decode(request: DecodeRequest) -> Hypothesis:
        nonlocal decodes, decoded_s
        decodes += 1
        decoded_s += len(request.audio) / TARGET_RATE
        la.decoded_in(0.0)  # answered at once: a fast_step_s cadence is always on
        return transcribe([request])[0]

    step = int(frame_s * TARGET_RATE)
    for pos in range(0, len(audio), step):
        frame = audio[pos : pos + step]
        la.add_audio(frame)
        if vad is not None:
            la.add_voice(vad.process(frame))
        if outage is not None and outage[0] <= (pos + len(frame)) / TARGET_RATE < outage[1]:
            continue
        while True:  # the session's decode loop, each decode answered before the next frame
            endpoint = la.endpointed() and not la.backlogged()
            if not (endpoint or la.ready() or la.backlogged()):
                break
            hyp = decode_checked(la, decode, final=endpoint)
            update = la.flush(hyp) if endpoint else la.apply(hyp)
            endpoints += endpoint
            words.extend(update.committed)
            delays.extend(la.window_end - w.end for w in update.committed)
    while la.backlogged():  # close: the session's flush
        words.extend(la.apply(decode(la.request())).committed)
    for _ in range(4):  # the session's closing flush passes
        if not len(la.buffer):
            break
        update = la.flush(decode_checked(la, decode, final=True))
        words.extend(update.committed)
        if not update.committed or not la.uncovered():
            break
    return SimResult(words, decodes, decoded_s, endpoints, delays)
