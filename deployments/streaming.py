"""LocalAgreement-2 streaming policy with voice-activity endpointing: pure logic, no I/O.

The session keeps an audio buffer that starts where the committed transcript stops being
certain.  Each step re-decodes the whole buffer; the words on which the last two
hypotheses agree are committed (never revised); the rest is the partial.  Once the buffer
passes ``max_buffer_s`` it is cut at a committed boundary, so decode cost stays bounded.

With voice activity (:class:`~deployments.vad.VoiceTracker`, fed by the session): no decode
runs unless new speech arrived since the last one; when speech has been followed by
``endpoint_silence_s`` of silence the utterance is decoded once more and committed whole
(an endpoint: finals come at the end of speech instead of after two agreeing decodes); and,
only if ``keep_silence_s`` is set, silence between utterances is dropped from the buffer.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from dataclasses import dataclass, field, replace

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from deployments.transcript import MAX_WINDOW_SAMPLES, MODEL_WINDOW_S, DecodeRequest, Hypothesis, Word
from deployments.vad import VadConfig, VoiceTracker
from ingest.audio import TARGET_RATE as SAMPLE_RATE

_NORM = re.compile(r"[^\w']+")


class PolicyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    step_s: float = Field(1.0, gt=0.05, le=10.0)  # decode cadence (partials every step)
    # load-adaptive cadence: a decode every fast_step_s while this stream's decodes come back
    # within it (an idle engine: one stream commits sooner), every step_s once they take
    # longer (a loaded engine is not asked for more); None: always step_s
    fast_step_s: float | None = Field(None, gt=0.05, le=10.0)
    # ...and while the ASR replicas that answered were at most this busy (their last 5 s): the
    # fast cadence doubles a stream's decodes, which a saturated engine turns into queueing
    # for every stream (8 streams on 2 cores, no gate: commit p95 5.1 -> 6.1 s)
    fast_max_busy: float = Field(0.95, gt=0.0, le=1.0)
    max_buffer_s: float = Field(15.0, ge=2.0, le=25.0)  # cut the buffer past this
    # a cut with no sentence end to take keeps this much committed speech in front of the next
    # words (fed again as the forced prefix): a window that starts right at an uncommitted
    # word mishears it ("never been | surpassed" -> "past"); 0: cut at the last committed word
    cut_lead_s: float = Field(2.0, ge=0.0, le=10.0)
    hard_buffer_s: float = Field(27.0, ge=5.0, le=30.0)  # force-commit past this (model max 30)
    # commit words ending this long before the decoded window's end without waiting for a
    # second decode to agree (None: only agreement commits); see LocalAgreement.apply
    settle_s: float | None = Field(None, ge=1.0, le=20.0)
    # two decodes closer together than step_s (fast_step_s) agree on a word only if it ended
    # this long before the earlier decode's window end: a word cut at the window's edge can be
    # misheard the same way twice by decodes 0.5 s apart; 0: any agreed word commits
    agree_margin_s: float = Field(0.0, ge=0.0, le=5.0)
    # until the stream's first words commit, two decodes agree only if the later one heard
    # at least this much audio: from 1-2 s of audio with no text before it Whisper often gets
    # the first words wrong, the same way twice ("had he married" -> "how do you marry" at
    # 1.5 and 2 s, right from 3 s on); 0: from the first decode
    first_agree_s: float = Field(0.0, ge=0.0, le=10.0)
    prompt_chars: int = Field(200, ge=0, le=800)  # committed text fed back as the prompt
    # audio waiting beyond this (a resume resending a long backlog, a stream far behind) is
    # refused with 1013 rather than held in memory; below it a backlog is decoded 30 s at a time
    max_backlog_s: float = Field(120.0, ge=30.0, le=900.0)
    overlap_tolerance_s: float = Field(0.25, ge=0.0)  # word-start slack around the commit point
    # feed committed words still inside the buffer to the decoder instead of re-decoding them
    force_committed: bool = True
    # a prompted decode whose first new word ends this long after the committed point is
    # checked by a decode without the prompt (see LocalAgreement.skipped)
    skip_gap_s: float = Field(1.5, ge=0.5, le=10.0)
    vad: VadConfig = VadConfig()
    # with voice activity: silence after speech that ends an utterance (commit it at once)
    endpoint_silence_s: float = Field(0.6, ge=0.1, le=5.0)
    # with voice activity: silence kept in front of the next utterance, the rest dropped;
    # None keeps it (Silero misses quiet spontaneous speech: dropping "silence" lost words,
    # long-form WER 13.1 -> 16.5 %; the buffer cut past max_buffer_s bounds it anyway)
    keep_silence_s: float | None = Field(None, ge=0.2, le=10.0)


class AudioBuffer:
    """Growable float32 audio: an append copies only the new frame (amortised; the storage
    doubles when full), a cut moves the start.  Re-concatenating the whole buffer on every
    100 ms frame cost the ingress O(buffer) per frame per stream."""

    def __init__(self, capacity: int = 4 * SAMPLE_RATE) -> None:
        self._data = np.zeros(capacity, dtype=np.float32)
        self._start = self._end = 0

    def __len__(self) -> int:
        return self._end - self._start

    @property
    def samples(self) -> np.ndarray:
        return self._data[self._start : self._end]

    def append(self, samples: np.ndarray) -> None:
        n = len(samples)
        if self._end + n > len(self._data):
            live = self.samples
            grown = np.empty(max(len(self._data), 2 * (len(live) + n)), dtype=np.float32)
            grown[: len(live)] = live
            self._data, self._start, self._end = grown, 0, len(live)
        self._data[self._end : self._end + n] = samples
        self._end += n

    def drop(self, n: int) -> None:
        self._start += max(0, min(n, len(self)))

    def clear(self) -> None:
        self._start = self._end = 0


def _ending_by(words: list[Word], t: float) -> int:
    """How many leading ``words`` end by stream time ``t``."""
    return next((i for i, w in enumerate(words) if w.end > t), len(words))


def norm(word: str) -> str:
    return _NORM.sub("", word.lower())


@dataclass
class Update:
    committed: list[Word] = field(default_factory=list)
    partial: list[Word] = field(default_factory=list)


class LocalAgreement:
    def __init__(self, config: PolicyConfig | None = None) -> None:
        self.config = config or PolicyConfig()
        self.audio = AudioBuffer()
        self.buffer_offset = 0.0  # stream seconds of buffer[0]
        self.committed: list[Word] = []
        self.pending: list[Word] = []  # the previous hypothesis beyond the committed words
        self._pending_end = 0.0  # the window end of the decode that gave ``pending``
        self.undecoded_s = 0.0  # audio added since the last decode request
        self._window_end: float | None = None  # where the last decode request's audio ended
        self.voice: VoiceTracker | None = None  # set by the session when it runs a VAD
        self._utterance_open = False  # speech arrived since the last endpoint
        self._forced = False  # the last request carried a forced prefix
        self._prompted = False  # the last request carried a prompt
        self._gap_checked: float | None = None  # see skipped()
        self._window_voice_end = 0.0  # see request()
        self._short_flush = False  # the last flush kept audio after its last word (see flush())
        self.decode_s: float | None = None  # this stream's recent decode time (moving average)
        self.engine_busy: float | None = None  # the answering replicas' busy fraction (average)

    # --- audio ------------------------------------------------------------------------

    @property
    def buffer(self) -> np.ndarray:
        """The uncommitted audio (a view: copy what must outlive the next add or cut)."""
        return self.audio.samples

    @property
    def audio_end(self) -> float:
        return self.buffer_offset + len(self.buffer) / SAMPLE_RATE

    @property
    def committed_end(self) -> float:
        return self.committed[-1].end if self.committed else 0.0

    def add_audio(self, samples: np.ndarray) -> None:
        self.audio.append(samples)
        self.undecoded_s += len(samples) / SAMPLE_RATE

    def add_voice(self, probs: list[float]) -> None:
        """Speech probabilities of the audio just added (see :class:`VoiceTracker`)."""
        if self.voice is None:
            return
        self.voice.feed(probs)
        if self.voice.speaking:
            self._utterance_open = True
        elif (
            (keep := self.config.keep_silence_s) is not None
            and not self._utterance_open
            and self._buffer_s() > keep
        ):
            # between utterances: keep only the silence just before whatever comes next
            self._cut_at(self.audio_end - keep)
            self.undecoded_s = min(self.undecoded_s, self._buffer_s())

    def decoded_in(self, seconds: float, busy: float | None = None) -> None:
        """A decode of this stream took ``seconds`` (request to answer, queueing included);
        ``busy``: the busy fraction of the replica that answered, when it said."""
        self.decode_s = _smoothed(self.decode_s, seconds)
        if busy is not None:
            self.engine_busy = _smoothed(self.engine_busy, busy)

    @property
    def step_s(self) -> float:
        """The decode cadence now: ``fast_step_s`` while decodes come back within it and the
        engine has room for them."""
        fast = self.config.fast_step_s
        if fast is None or self.decode_s is None or self.decode_s > fast:
            return self.config.step_s
        if self.engine_busy is not None and self.engine_busy > self.config.fast_max_busy:
            return self.config.step_s
        return min(fast, self.config.step_s)

    def ready(self) -> bool:
        """A step's worth of new audio is waiting to be decoded (and, with voice activity,
        new speech arrived since the last decode)."""
        # (a tolerance: ten 100 ms frames add up to 0.9999... s, which made the 1 s step 1.1 s)
        if self.undecoded_s < self.step_s - 1e-6:
            return False
        if self.voice is None:
            return True
        decoded_to = self.buffer_offset if self._window_end is None else self._window_end
        return self.voice.voice_end > decoded_to + 1e-6

    def endpointed(self) -> bool:
        """Speech was followed by ``endpoint_silence_s`` of silence: flush the utterance."""
        if self.voice is None or not self._utterance_open or len(self.buffer) == 0:
            return False
        return self.voice.silence_s(self.voice.end) >= self.config.endpoint_silence_s

    def _first_inside(self) -> int:
        """Index of the first committed word inside the buffer (the forced prefix starts here)."""
        return len(self.committed) - sum(1 for w in self.committed if w.start >= self.buffer_offset)

    def context(self) -> list[Word]:
        """The committed words a restored session needs: those inside the buffer (the forced
        prefix) and enough before it for the prompt and the repeat check."""
        keep, chars = self._first_inside(), 0
        while keep > 0 and (chars < self.config.prompt_chars or len(self.committed) - keep < 5):
            keep -= 1
            chars += len(self.committed[keep].text)
        return self.committed[keep:]

    def restore(self, offset: float, context: list[Word], pending: list[Word] | None = None) -> None:
        """Continue a session from durable state: audio resumes at ``offset``; ``pending`` (the
        last hypothesis) lets the first decode after the resume commit what it agrees with."""
        self.audio.clear()
        self.buffer_offset = offset
        self.committed = list(context)
        self.pending = [w for w in pending or [] if w.start >= offset]
        # the decode behind ``pending`` saw at least its last word (its window end is not kept)
        self._pending_end = self.pending[-1].end if self.pending else offset
        self.undecoded_s = 0.0
        self._window_end = None
        if self.voice is not None:
            self.voice = VoiceTracker(self.voice.config, start=offset, voice_end=offset)
        # no endpoint before the fresh VAD has heard speech: the first resent chunks may be
        # mid-word while it warms up, and a flush there would cut the word at the seam
        self._utterance_open = False

    def request(self, min_tokens: int = 0, final: bool = False, prompt: bool = True) -> DecodeRequest:
        """What to decode now: the buffer (its first 30 s if a backlog is waiting), prompted
        with earlier committed text (unless ``prompt`` is false: see :meth:`skipped`);
        ``min_tokens``: see :class:`DecodeRequest`; ``final``: its words will be committed
        whole (:meth:`flush`), so the encoder gets its full input."""
        self.undecoded_s = 0.0
        split = self._first_inside()
        text = "".join(w.text for w in self.committed[:split])[-self.config.prompt_chars :] if prompt else ""
        self._prompted = bool(text)
        forced = "".join(w.text for w in self.committed[split:]) if self.config.force_committed else ""
        self._forced = bool(forced)
        window = self.buffer[:MAX_WINDOW_SAMPLES].copy()
        self._window_end = self.buffer_offset + len(window) / SAMPLE_RATE
        # where the speech inside this window ends, as the VAD heard it when it was sent
        self._window_voice_end = min(self.voice.voice_end, self._window_end) if self.voice else 0.0
        return DecodeRequest(window, self.buffer_offset, text, forced, min_tokens, full_window=final)

    @property
    def window_end(self) -> float:
        """Stream seconds where the audio of the last decode request ended."""
        return self.audio_end if self._window_end is None else self._window_end

    def backlogged(self) -> bool:
        """More audio waits than one decode can see: the next request is a 30 s window."""
        return self._buffer_s() > MODEL_WINDOW_S

    # --- hypotheses ---------------------------------------------------------------------

    def _fresh(self, hyp: Hypothesis) -> list[Word]:
        """Hypothesis words past the committed point.  After a forced prefix that the decoder
        counted (``Hypothesis.forced_words``), the words it decoded: their times can drift
        before the committed point ("should" aligned 1 s early was taken for committed audio
        and lost), and a word said again right after the committed ones is speech ("words,
        words, words, words" lost two).  Else by time, minus a repeat of the committed tail."""
        if self._forced and hyp.forced_words:
            after = self.committed_end
            return [
                w if w.start >= after else replace(w, start=after, end=max(w.end, after))
                for w in hyp.words[hyp.forced_words :]
            ]
        limit = self.committed_end - self.config.overlap_tolerance_s
        words = [w for w in hyp.words if w.start >= limit]
        tail = [norm(w.text) for w in self.committed[-5:]]
        for n in range(min(5, len(tail), len(words)), 0, -1):
            if tail[-n:] == [norm(w.text) for w in words[:n]]:
                return words[n:]
        return words

    def apply(self, hyp: Hypothesis) -> Update:
        """Commit the agreed prefix of the previous and this hypothesis."""
        words = _heard(self._fresh(hyp))
        agreed = 0
        # the margin is for decodes closer together than the full step (the fast cadence): a
        # second later the word's right context has been heard, and at the full step a margin
        # would hold half of each decode's new words back for one more step
        close = self.window_end - self._pending_end < self.config.step_s - 1e-6
        margin = self.config.agree_margin_s if close else 0.0
        edge = self._pending_end - margin if margin > 0 else float("inf")
        if not self.committed and self.window_end - self.buffer_offset < self.config.first_agree_s - 1e-6:
            edge = -1.0  # no text context yet and too little audio: no word agrees
        for old, new in zip(self.pending, words, strict=False):
            if not _same_word(old, new) or old.end > edge + 1e-6:
                break
            agreed += 1
        cutoff = self.window_end - 5.0
        if self._buffer_s() > self.config.hard_buffer_s:
            # far behind or no agreement for too long: commit all but the last 5 s, agreed or not
            agreed = max(agreed, _ending_by(words, cutoff))
        if self.config.settle_s is not None:
            # words this far from the window's end had their right context: commit them even
            # unconfirmed.  Keeping up, two decodes agree on them sooner; behind (decodes come
            # seconds apart), this bounds the commit lag and the buffer instead of waiting
            # for the next decode while the buffer and each decode's cost grow
            settled = _ending_by(words, self.window_end - self.config.settle_s)
            agreed = max(agreed, min(settled, self._trusted(hyp, words)))
        commit = words[:agreed]
        self.committed.extend(commit)
        self.pending = words[len(commit) :]
        self._pending_end = self.window_end
        if self.audio_end > self.window_end + 1e-6 and self._buffer_s() > self.config.hard_buffer_s:
            # a backlog: move on to the next window, keeping only what is still uncommitted.
            # A decode that stopped early (a 30 s window answered with a few words) covers its
            # window only to its last word: the audio after it is decoded again, not dropped
            keep = [cutoff] + [w.start for w in self.pending]
            if commit and not self.pending:
                keep.append(commit[-1].end)
            self._cut_at(min(keep))
        else:
            self._trim(hyp)
        return Update(commit, list(self.pending))

    def _trusted(self, hyp: Hypothesis, words: list[Word]) -> int:
        """How many leading ``words`` one decode may commit unconfirmed (``settle_s``): none of
        a decode that looped or that the decoder doubted, and none from the first word that
        starts a repeat of a phrase said just before.  A decoder that slips repeats what it
        just said ("...would be difficult to understand" twice, committed by settle in a
        failover run); a real repeat still commits once a second decode agrees."""
        if hyp.looped or hyp.avg_logprob < _TRUST_LOGPROB:
            return 0
        said = [norm(w.text) for w in self.committed[-_REPEAT_LOOKBACK:]]
        seen = {tuple(said[i : i + _REPEAT_N]) for i in range(len(said) - _REPEAT_N + 1)}
        texts = [norm(w.text) for w in words]
        for i in range(len(texts) - _REPEAT_N + 1):
            gram = tuple(texts[i : i + _REPEAT_N])
            if gram in seen:
                return i
            seen.add(gram)
        return len(words)

    def stalled(self, hyp: Hypothesis) -> bool:
        """The forced decode stopped at the committed words although speech follows them.

        A forced prefix that ends in a misrecognised word can leave the decoder nothing to
        say but end-of-text; at a flush that lost the stream's last words ("...warm and thou"
        without "feel'st it cold", also when decoded again without the prefix).  The caller
        then decodes the window once more with end-of-text held back for one token
        (``request(min_tokens=1, final=True)``).  Only for a flush's decode: mid-stream a
        forced continuation can skip ahead, and two such decodes agree on the skip."""
        if not self._forced or self._fresh(hyp):
            return False
        after = self.committed_end if self.committed_end > self.buffer_offset else self.buffer_offset
        if self.window_end - after < 1.0:
            return False
        return self.voice is None or self.voice.voice_end > after + 0.3

    def skipped(self, hyp: Hypothesis) -> bool:
        """The prompted decode's first new word ends well after the committed point: a pause,
        or the decoder skipped speech.  Prompted with text that ends a sentence, a window
        starting at that cut can skip the next sentence ("...my antecedents. The narrative
        ...", the word timings then stretch the first word over the skipped audio); two such
        decodes agree, and the words were lost.  The caller decodes the window once more
        without the prompt (``request(prompt=False)``) and uses it if it :meth:`recovers`
        words.  Checked once per committed point: a real pause stays there for several steps."""
        fresh = self._fresh(hyp)
        after = max(self.committed_end, self.buffer_offset)
        if not self._prompted or not fresh or fresh[0].end <= after + self.config.skip_gap_s:
            return False
        if self._gap_checked == after:
            return False
        self._gap_checked = after
        return True

    def recovers(self, hyp: Hypothesis, retry: Hypothesis) -> bool:
        """The unprompted retry found words the prompted decode skipped (a skipped sentence is
        several words; a few more can be audio that arrived during the decode)."""
        return len(self._fresh(retry)) >= len(self._fresh(hyp)) + 3

    def continues(self, hyp: Hypothesis) -> bool:
        """A retry's words pick up where the committed words stop.  Held back from
        end-of-text, the decoder can also jump ahead and skip a sentence ("...painful to
        myself. if not from all..."): such a retry is not used."""
        fresh = self._fresh(hyp)
        after = max(self.committed_end, self.buffer_offset)
        return bool(fresh) and fresh[0].start <= after + 1.0

    def checked(self, first: DecodeRequest, final: bool) -> Generator[DecodeRequest, Hypothesis, Hypothesis]:
        """Decode ``first`` (``final``: an endpoint or closing flush, committed whole) with the
        decoder slips checked: yields each request, is sent its hypothesis, returns the one to
        use.  A flush's decode that :meth:`stalled` is retried with end-of-text held back (used
        if it :meth:`continues`); a prompted decode that :meth:`skipped` ahead is retried without
        the prompt (used if it :meth:`recovers` words).  Sans-I/O, so the session (async) and
        the simulator (sync) run the same steps."""
        hyp = yield first
        if final and self.stalled(hyp):
            retry = yield self.request(min_tokens=1, final=True)
            hyp = retry if self.continues(retry) else hyp
        if self.skipped(hyp):
            retry = yield self.request(final=final, prompt=False)
            hyp = retry if self.recovers(hyp, retry) else hyp
        return hyp

    def flush(self, hyp: Hypothesis) -> Update:
        """End of utterance/stream: commit every word of the last request's window and drop
        that audio (audio that arrived during the decode stays, still to be decoded)."""
        commit = self._fresh(hyp)
        self.committed.extend(commit)
        self.pending = []
        end = self.window_end
        # where speech ends in the window: the VAD's word, else assume it runs to the end
        speech_end = self._window_voice_end if self.voice is not None else end
        self._short_flush = bool(commit) and speech_end > commit[-1].end + 1.0
        if self._short_flush:
            # the decode stopped short of the speech it was given (greedy decoding can skip a
            # sentence of a long window, or end on a few hallucinated words): keep the audio
            # after its last word, decode it again
            end = min(end, commit[-1].end)
        self._cut_at(end)
        self.undecoded_s = self._buffer_s()
        if self.voice is not None:
            self._utterance_open = self.voice.voice_end > end + 1e-6
        return Update(commit, [])

    def uncovered(self) -> bool:
        """A flush kept audio it did not cover (see :meth:`flush`): decode the rest."""
        if len(self.buffer) == 0:
            return False
        return self._utterance_open if self.voice is not None else self._short_flush

    def _buffer_s(self) -> float:
        return len(self.buffer) / SAMPLE_RATE

    def _trim(self, hyp: Hypothesis) -> None:
        if self._buffer_s() <= self.config.max_buffer_s:
            return
        inside = [w for w in self.committed if w.end > self.buffer_offset]
        if inside:
            # prefer a sentence end, unless cutting there would leave the buffer still too long
            ends = [w.end for w in inside if w.text.rstrip().endswith((".", "?", "!"))]
            late_enough = [t for t in ends if self.audio_end - t <= self.config.max_buffer_s]
            if late_enough:
                cut = late_enough[-1]
            else:
                lead = [w.end for w in inside if w.end <= self.committed_end - self.config.cut_lead_s]
                cut = lead[-1] if lead else inside[-1].end
        elif not hyp.words:
            cut = self.window_end - self.config.step_s * 5  # silence: keep only the recent past
        else:
            return
        self._cut_at(cut)

    def overflowing(self) -> bool:
        """More audio waits than the stream may hold (see ``max_backlog_s``)."""
        return self._buffer_s() > self.config.max_backlog_s

    def _cut_at(self, t: float) -> None:
        drop = int(round((t - self.buffer_offset) * SAMPLE_RATE))
        drop = max(0, min(drop, len(self.buffer)))
        self.audio.drop(drop)
        self.buffer_offset += drop / SAMPLE_RATE


_AGREE_SLACK_S = 0.2
# settle_s commits one decode's words only if that decode did not doubt them: Whisper's own
# threshold for a failed decode (DecodeOptions.logprob_threshold)
_TRUST_LOGPROB = -1.0
_REPEAT_N = 3  # a phrase of this many words...
_REPEAT_LOOKBACK = 30  # ...said again within this many committed words: wait for agreement
_PILE_WORDS, _PILE_S = 4, 0.2  # this many words within this long: not heard (see _heard)


def _heard(words: list[Word]) -> list[Word]:
    """``words`` up to the first run of words piled up at one instant: a decoder that loops
    back over text it already said ("This is the sixth form. This I have a cold..." again, 30
    words at 35.8-35.9 s of the spontaneous recording) gets no audio for them from the
    alignment, and two decodes that slip alike agree on them.  Speech never fits
    ``_PILE_WORDS`` words in ``_PILE_S``; the audio stays in the buffer for the next decode."""
    for i in range(len(words) - _PILE_WORDS + 1):
        if words[i + _PILE_WORDS - 1].end - words[i].start < _PILE_S:
            return words[:i]
    return words


def _smoothed(average: float | None, value: float) -> float:
    """A moving average of recent decodes' figures: a few slow ones change the cadence, one
    does not."""
    return value if average is None else 0.7 * average + 0.3 * value


def _same_word(old: Word, new: Word) -> bool:
    """Two decodes agree on a word: the same text, heard at the same time.  Text alone is not
    enough: a decode that skipped speech can squeeze a word into a zero-length span before the
    skipped audio ("I'm" 32.7-32.7 s) while the other stretched it over that audio (33.0-34.8 s);
    committing it forced the next window to start with a word the speaker said 8 s later."""
    overlap = new.start <= old.end + _AGREE_SLACK_S and old.start <= new.end + _AGREE_SLACK_S
    return overlap and norm(old.text) == norm(new.text)
