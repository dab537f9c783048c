"""LocalAgreement-2 policy on scripted hypotheses."""

from __future__ import annotations

import numpy as np

from deployments.streaming import AudioBuffer, LocalAgreement, PolicyConfig
from deployments.transcript import Hypothesis, Word

SR = 16000


def words(spec: str, start: float = 0.0, dur: float = 0.5) -> list[Word]:
    return [Word(" " + w, start + i * dur, start + (i + 1) * dur) for i, w in enumerate(spec.split())]


def hyp(spec: str, start: float = 0.0) -> Hypothesis:
    return Hypothesis(words(spec, start))


def test_commits_only_what_two_hypotheses_agree_on() -> None:
    la = LocalAgreement()
    la.add_audio(np.zeros(SR, dtype=np.float32))
    first = la.apply(hyp("the cat"))
    assert first.committed == [] and [w.text for w in first.partial] == [" the", " cat"]
    second = la.apply(hyp("the cat sat on"))
    assert [w.text for w in second.committed] == [" the", " cat"]
    assert [w.text for w in second.partial] == [" sat", " on"]
    third = la.apply(hyp("the cat sat in the"))
    assert [w.text for w in third.committed] == [" sat"]


def test_agreement_ignores_case_and_punctuation() -> None:
    la = LocalAgreement()
    la.apply(hyp("Hello world"))
    upd = la.apply(hyp("hello, world. again"))
    assert [w.text for w in upd.committed] == [" hello,", " world."]


def test_agreement_needs_the_same_word_at_the_same_time() -> None:
    """The long-form spontaneous recording: one decode skipped speech and squeezed "I'm" into
    32.7-32.7 s, the previous one had stretched it over 33.0-34.8 s; text alone agreed, and the
    committed "I'm" made the next window skip 8 s of speech (WER 11.5 -> 22.1 %)."""
    la = LocalAgreement()
    la.add_audio(np.zeros(8 * SR, dtype=np.float32))  # (the recording's times less 30 s)
    la.apply(Hypothesis([Word(" I'm", 3.0, 4.8), Word(" a", 4.8, 4.8)]))
    skipped = la.apply(Hypothesis([Word(" I'm", 2.7, 2.7), Word(" quite", 2.7, 2.7)]))
    assert skipped.committed == []
    # the same word a little apart in time (DTW jitter) still agrees
    again = la.apply(Hypothesis([Word(" I'm", 2.75, 2.9), Word(" quite", 2.9, 3.2)]))
    assert [w.text for w in again.committed] == [" I'm", " quite"]


def test_committed_words_are_never_repeated() -> None:
    la = LocalAgreement()
    la.apply(hyp("one two three"))
    la.apply(hyp("one two three four"))
    # the next hypothesis re-reads the committed words (the buffer still holds them)
    upd = la.apply(hyp("one two three four five"))
    assert [w.text for w in upd.committed] == [" four"]
    flush = la.flush(hyp("one two three four five six"))
    assert [w.text for w in flush.committed] == [" five", " six"]
    assert [w.text.strip() for w in la.committed] == ["one", "two", "three", "four", "five", "six"]


def test_flush_commits_the_tail_and_empties_the_buffer() -> None:
    la = LocalAgreement()
    la.add_audio(np.zeros(2 * SR, dtype=np.float32))
    la.apply(hyp("a b c"))
    upd = la.flush(hyp("a b c d"))
    assert [w.text for w in upd.committed] == [" a", " b", " c", " d"]
    assert len(la.buffer) == 0 and la.buffer_offset == 2.0


def test_buffer_is_cut_at_a_committed_sentence_end() -> None:
    la = LocalAgreement(PolicyConfig(max_buffer_s=4.0))
    la.add_audio(np.zeros(5 * SR, dtype=np.float32))
    spec = "one two. three four five six"
    la.apply(hyp(spec))
    la.apply(hyp(spec + " seven"))  # commits all six; sentence end after "two." at 1.0 s
    assert la.buffer_offset == 1.0
    assert len(la.buffer) == 4 * SR
    req = la.request()
    assert req.offset == 1.0 and req.prompt == " one two."


def test_committed_words_inside_the_buffer_are_forced_not_prompted() -> None:
    la = LocalAgreement()
    la.add_audio(np.zeros(3 * SR, dtype=np.float32))
    la.apply(hyp("alpha beta"))
    la.apply(hyp("alpha beta gamma"))
    req = la.request()
    assert req.prompt == ""  # committed words are still inside the buffer...
    assert req.forced == " alpha beta"  # ...so the decoder is fed them instead
    plain = LocalAgreement(PolicyConfig(force_committed=False))
    plain.apply(hyp("alpha beta"))
    plain.apply(hyp("alpha beta gamma"))
    assert plain.request().forced == ""


def test_words_after_a_counted_forced_prefix_are_new_whatever_their_times() -> None:
    """The spontaneous recording: "more words, words, words, words" committed "words," and
    then took the next "words," for a re-decoded copy of it (two lost); "should", aligned a
    second before the committed "I", was taken for committed audio (lost).  A decoder that
    counts its forced words (``Hypothesis.forced_words``) says which words are new."""
    la = LocalAgreement()
    la.add_audio(np.zeros(4 * SR, dtype=np.float32))
    la.apply(hyp("some more words"))
    la.apply(hyp("some more words words"))  # commits "some more words" (1.5 s)
    assert la.request().forced == " some more words"
    fed = words("some more words")
    # the new words: a repeat of the last committed one, and one aligned before the commit point
    new = [Word(" words", 1.5, 1.9), Word(" and", 1.2, 2.2), Word(" I", 2.2, 2.4)]
    upd = la.apply(Hypothesis(fed + new, forced_words=3))
    assert [w.text for w in upd.committed] == [" words"]  # the earlier decode heard it too
    assert [w.text for w in upd.partial] == [" and", " I"]
    assert upd.partial[0].start == 1.5 and upd.partial[0].end == 2.2  # not before the commit
    again = la.apply(
        Hypothesis(words("some more words words") + new[1:] + words("should", 2.4), forced_words=4)
    )
    assert [w.text for w in again.committed] == [" and", " I"]
    # without the count (a decoder that does not say), times and the committed tail decide
    old = LocalAgreement()
    old.add_audio(np.zeros(4 * SR, dtype=np.float32))
    old.apply(hyp("some more words"))
    old.apply(hyp("some more words words"))
    old.request()
    assert [w.text for w in old.apply(Hypothesis(fed + new)).partial] == [" I"]


def test_the_first_words_agree_only_after_enough_audio() -> None:
    """A held-out clip: decodes of its first 1.5 and 2 s both began "How do you marry..." for
    "Had he married..." (right from 3 s on) and agreed.  Until the stream's first commit, the
    later decode must have heard ``first_agree_s``; after it, the committed text is context."""
    la = LocalAgreement(PolicyConfig(step_s=0.5, first_agree_s=3.0))
    half = np.zeros(SR // 2, dtype=np.float32)
    for _ in range(3):
        la.add_audio(half)
    la.request()  # a 1.5 s window
    la.apply(hyp("how do you"))
    la.add_audio(half)
    la.request()  # 2 s
    assert la.apply(hyp("how do you marry")).committed == []  # this one heard 2 s only
    la.add_audio(half)
    la.request()  # 2.5 s
    assert la.apply(hyp("had he married a")).committed == []  # 2.5 s only (and they disagree)
    la.add_audio(half)
    la.request()  # 3 s
    assert [w.text for w in la.apply(hyp("had he married a more")).committed] == [
        " had",
        " he",
        " married",
        " a",
    ]
    # with words committed the rule is off: the next two decodes agree at once
    la.add_audio(half)
    la.request()
    assert [w.text for w in la.apply(hyp("had he married a more amiable")).committed] == [" more"]


def test_silence_buffer_is_bounded() -> None:
    la = LocalAgreement(PolicyConfig(max_buffer_s=5.0, step_s=0.5))
    for _ in range(20):
        la.add_audio(np.zeros(SR, dtype=np.float32))
        la.apply(Hypothesis([]))
    assert len(la.buffer) / SR <= 5.0
    assert la.audio_end == 20.0


def test_ready_after_a_step_of_audio() -> None:
    la = LocalAgreement(PolicyConfig(step_s=1.0))
    la.add_audio(np.zeros(SR // 2, dtype=np.float32))
    assert not la.ready()
    la.add_audio(np.zeros(SR // 2, dtype=np.float32))
    assert la.ready()
    la.request()
    assert not la.ready()
    # ten 100 ms frames are a step (their float sum is 0.9999...: the step once ran at 1.1 s)
    for _ in range(9):
        la.add_audio(np.zeros(SR // 10, dtype=np.float32))
        assert not la.ready()
    la.add_audio(np.zeros(SR // 10, dtype=np.float32))
    assert la.ready()


def test_cadence_is_fast_while_decodes_come_back_within_the_fast_step() -> None:
    """Load-adaptive cadence: half-second steps while this stream's decodes are quick, the
    full step once they slow down (a loaded engine), and back when they speed up again."""
    la = LocalAgreement(PolicyConfig(step_s=1.0, fast_step_s=0.5))
    half = np.zeros(SR // 2, dtype=np.float32)
    la.add_audio(half)
    assert not la.ready()  # no decode timed yet: the full step
    la.add_audio(half)
    la.request()
    la.decoded_in(0.3)
    la.add_audio(half)
    assert la.step_s == 0.5 and la.ready()
    la.request()
    for _ in range(3):  # a few slow decodes move the average past the fast step
        la.decoded_in(1.5)
    la.add_audio(half)
    assert la.step_s == 1.0 and not la.ready()
    for _ in range(6):
        la.decoded_in(0.2)
    assert la.step_s == 0.5 and la.ready()
    plain = LocalAgreement(PolicyConfig(step_s=1.0))
    plain.decoded_in(0.01)
    assert plain.step_s == 1.0  # no fast step configured: always the full one


def test_cadence_stays_at_the_full_step_while_the_engine_is_nearly_saturated() -> None:
    """Quick decodes from a replica that is busy most of the time: doubling this stream's
    decodes would queue every stream's (8 streams on 2 cores: commit p95 5.1 -> 6.1 s)."""
    la = LocalAgreement(PolicyConfig(step_s=1.0, fast_step_s=0.5, fast_max_busy=0.8))
    for _ in range(4):
        la.decoded_in(0.3, busy=0.95)
    assert la.step_s == 1.0
    for _ in range(6):  # the load went away
        la.decoded_in(0.3, busy=0.4)
    assert la.step_s == 0.5
    la.decoded_in(0.3, busy=None)  # a replica that does not say: the decode time decides
    assert la.step_s == 0.5


def test_falling_behind_never_overflows_the_model_window() -> None:
    """Decodes that come back every 6 s with hypotheses that never agree still commit (all
    but the last 5 s) and keep the buffer under the 30 s the model can see."""
    la = LocalAgreement()
    t = 0.0
    for round_ in range(12):
        la.add_audio(np.zeros(6 * SR, dtype=np.float32))
        t += 6.0
        # words every 0.5 s over the whole buffer, spelled differently each round
        n = int((la.audio_end - la.buffer_offset) / 0.5)
        spoken = [
            Word(f" w{round_}_{i}", la.buffer_offset + i * 0.5, la.buffer_offset + (i + 1) * 0.5)
            for i in range(n)
        ]
        la.apply(Hypothesis(spoken))
        assert not la.overflowing()
        assert la.audio_end - la.buffer_offset <= 27.0 + 6.0
    # a forced commit comes at least every time the buffer passes 27 s
    assert la.committed and la.committed[-1].end >= t - 27.0 - 6.0
    ends = [w.end for w in la.committed]
    assert ends == sorted(ends) and len(set(ends)) == len(ends)  # in order, nothing twice


def test_buffer_cut_with_the_sentence_end_too_early_keeps_committed_speech_in_front() -> None:
    """No sentence end late enough: the cut keeps ``cut_lead_s`` of committed words, fed as
    the forced prefix, in front of the next word.  Cut at the last commit, the LJSpeech
    recording's next window began at "surpassed" and heard "past"."""
    spec = "one. two three four five six seven eight nine ten eleven twelve thirteen"
    cuts = {}
    for lead in (0.0, 2.0):
        la = LocalAgreement(PolicyConfig(max_buffer_s=4.0, cut_lead_s=lead))
        la.add_audio(np.zeros(8 * SR, dtype=np.float32))
        la.apply(hyp(spec))
        la.apply(hyp(spec + " fourteen"))  # all committed; the only sentence end is at 0.5 s
        cuts[lead] = (la.buffer_offset, la.request().forced)
    assert cuts[0.0] == (6.5, "")  # at the last commit ("thirteen"), not at "one."
    assert cuts[2.0] == (4.5, " ten eleven twelve thirteen")  # 2 s of it kept


def test_restored_policy_commits_on_the_first_decode_that_agrees_with_the_saved_hypothesis() -> None:
    la = LocalAgreement()
    la.add_audio(np.zeros(3 * SR, dtype=np.float32))
    la.apply(hyp("alpha beta"))
    la.apply(hyp("alpha beta gamma delta"))  # commits alpha beta; gamma delta pending
    saved = (la.buffer_offset, la.context(), list(la.pending))
    again = LocalAgreement()
    again.restore(*saved)
    again.add_audio(np.zeros(4 * SR, dtype=np.float32))
    update = again.apply(hyp("alpha beta gamma delta epsilon"))
    assert [w.text.strip() for w in update.committed] == ["gamma", "delta"]


def test_audio_buffer_matches_concatenation_through_growth_and_cuts() -> None:
    rng = np.random.default_rng(0)
    buf, plain = AudioBuffer(capacity=1000), np.zeros(0, dtype=np.float32)
    for i in range(200):
        frame = rng.standard_normal(int(rng.integers(0, 700))).astype(np.float32)
        buf.append(frame)
        plain = np.concatenate([plain, frame])
        if i % 7 == 0:
            cut = int(rng.integers(0, len(plain) + 50))  # past the end: empties it
            buf.drop(cut)
            plain = plain[cut:]
        assert len(buf) == len(plain) and np.array_equal(buf.samples, plain)
    buf.clear()
    assert len(buf) == 0 and len(buf.samples) == 0


def test_a_prompted_decode_that_jumps_past_the_cut_is_checked_once_without_the_prompt() -> None:
    la = LocalAgreement(PolicyConfig(step_s=1.0))
    said = [Word(" my", 3.2, 3.4), Word(" antecedents.", 3.4, 4.6)]
    la.restore(4.6, said)  # a buffer cut at a committed sentence end
    la.add_audio(np.zeros(12 * SR, dtype=np.float32))
    request = la.request()
    assert request.prompt.endswith("antecedents.") and not request.forced
    # the skip as the decoder reports it: the first word stretched over the skipped sentence
    jumped = Hypothesis([Word(" The", 4.6, 6.3), Word(" narrative", 6.3, 6.5)])
    assert la.skipped(jumped)
    retry = la.request(prompt=False)
    assert retry.prompt == "" and np.array_equal(retry.audio, request.audio)
    found = Hypothesis(words("nor of the circumstances which led the narrative", 4.6, 0.2))
    assert la.recovers(jumped, found)
    assert not la.recovers(jumped, Hypothesis(words("the narrative would", 4.6)))
    la.request()
    assert not la.skipped(jumped)  # a real pause: checked once per committed point
    la.restore(4.6, said)
    la.add_audio(np.zeros(12 * SR, dtype=np.float32))
    la.request()
    assert not la.skipped(Hypothesis([Word(" nor", 5.5, 5.7)]))  # ends within skip_gap_s
    la.request(prompt=False)
    assert not la.skipped(jumped)  # nothing to retry: it carried no prompt


def test_settled_words_commit_without_a_second_decode() -> None:
    spoken = " ".join(f"w{i}" for i in range(20))  # 0.5 s words over the 10 s window
    for settle, expect in ((None, 0), (4.0, 12)):  # 12 words end by 10 s - 4 s
        la = LocalAgreement(PolicyConfig(step_s=1.0, settle_s=settle))
        la.add_audio(np.zeros(10 * SR, dtype=np.float32))
        la.request()
        update = la.apply(hyp(spoken))
        assert [w.text for w in update.committed] == [f" w{i}" for i in range(expect)]
        assert len(update.partial) == 20 - expect


def test_settle_waits_for_agreement_on_a_repeated_phrase_or_a_doubted_decode() -> None:
    """settle_s commits one decode's words unconfirmed; a decoder slip that says a phrase
    again ("...difficult to understand" twice, a failover run) or a decode the decoder
    doubted waits for a second decode instead.  A real repeat still commits on agreement."""

    def settled(spoken: str, logprob: float = -0.3) -> list[str]:
        la = LocalAgreement(PolicyConfig(step_s=1.0, settle_s=4.0))
        la.add_audio(np.zeros(10 * SR, dtype=np.float32))
        la.request()
        return [w.text.strip() for w in la.apply(Hypothesis(words(spoken), avg_logprob=logprob)).committed]

    plain = "it would be difficult to understand what was said by the man in the"
    assert settled(plain) == plain.split()[:12]  # 12 words end by 10 s - 4 s
    slip = "it would be difficult to understand would be difficult to understand now"
    assert settled(slip) == slip.split()[:6]  # up to the repeat, not into it
    assert settled(plain, logprob=-1.5) == []  # doubted: agreement only

    said = "it would be difficult to understand he said difficult to understand now"
    la = LocalAgreement(PolicyConfig(step_s=1.0, settle_s=4.0))
    la.add_audio(np.zeros(10 * SR, dtype=np.float32))
    la.request()
    first = la.apply(Hypothesis(words(said)))
    assert [w.text.strip() for w in first.committed] == said.split()[:8]
    la.request()
    again = la.apply(Hypothesis(words(said)))  # a second decode agrees: a real repeat
    assert [w.text.strip() for w in again.committed] == said.split()[8:]


def test_a_backlogged_decode_that_stopped_early_keeps_the_audio_after_its_words() -> None:
    """The failover tier's loss under a backlog: a 30 s window answered with words for its first
    4 s only (the decoder stopped); cutting at the window end - 5 s dropped 21 s of speech
    no decode had transcribed.  The cut stops at the last word; the next decode starts there."""
    la = LocalAgreement()
    la.add_audio(np.zeros(40 * SR, dtype=np.float32))  # a replica restart: 40 s piled up
    request = la.request()
    assert len(request.audio) == 30 * SR
    update = la.apply(hyp("printing to the future. and", start=0.0))  # 0-2.5 s, then nothing
    assert [w.text for w in update.committed][-1] == " and"
    assert la.buffer_offset == update.committed[-1].end == 2.5  # not 25 s
    assert la.request().offset == 2.5


def test_a_backlogged_silent_window_is_still_passed() -> None:
    la = LocalAgreement()
    la.add_audio(np.zeros(40 * SR, dtype=np.float32))
    la.request()
    la.apply(Hypothesis([]))  # no words at all: silence, the backlog moves on
    assert la.buffer_offset == 25.0


def test_a_flush_without_vad_keeps_the_audio_its_words_do_not_reach() -> None:
    """ "...printing to the future." and nothing of the 10 s after it: a closing flush decode
    that ends early must not drop the rest of its window; the session decodes it again."""
    la = LocalAgreement()
    la.add_audio(np.zeros(12 * SR, dtype=np.float32))
    la.request(final=True)
    update = la.flush(hyp("to the future.", start=0.0))  # words to 1.5 s of a 12 s window
    assert update.committed and la.buffer_offset == 1.5 and la.uncovered()
    la.request(final=True)
    rest = "for the beautiful letters and it was a matter of course that in the middle ages the men took care"
    la.flush(hyp(rest, start=1.5))  # 20 words: to 11.5 s of 12
    assert not la.uncovered()  # its words run to the window's end: nothing kept


def test_agreement_margin_keeps_words_at_the_earlier_window_edge_pending() -> None:
    """Decodes 0.5 s apart can hear a word cut at the window's edge the same wrong way twice:
    with ``agree_margin_s`` a word commits only if the earlier decode heard it whole."""
    spoken = "w0 w1 w2 w3"  # 0.5 s words: 0-2 s
    # w2 ends 1.5 s, 0.5 s before the first decode's edge (2 s); w3 at the edge
    for margin, expect, then in ((0.0, 4, [" w4"]), (0.6, 2, [" w2"])):
        la = LocalAgreement(PolicyConfig(step_s=1.0, fast_step_s=0.5, agree_margin_s=margin))
        la.decoded_in(0.1)  # an idle engine: the fast cadence
        la.add_audio(np.zeros(2 * SR, dtype=np.float32))
        la.request()
        la.apply(hyp(spoken))
        la.add_audio(np.zeros(SR // 2, dtype=np.float32))
        la.request()
        update = la.apply(hyp(spoken + " w4"))
        assert [w.text for w in update.committed] == [f" w{i}" for i in range(expect)]
        # a held word commits on the next decode that agrees, once the earlier one heard it whole
        la.add_audio(np.zeros(SR // 2, dtype=np.float32))
        la.request()
        assert [w.text for w in la.apply(hyp(spoken + " w4 w5")).committed] == then


def test_agreement_margin_is_off_for_decodes_a_full_step_apart() -> None:
    """At the full step the second decode heard a second past the first one's edge: the words
    the two agree on commit, the margin would only hold half of them back for another step."""
    la = LocalAgreement(PolicyConfig(step_s=1.0, fast_step_s=0.5, agree_margin_s=0.5))
    la.add_audio(np.zeros(2 * SR, dtype=np.float32))
    la.request()
    la.apply(hyp("w0 w1 w2 w3"))  # 0.5 s words: 0-2 s, w3 at the window's edge
    la.add_audio(np.zeros(SR, dtype=np.float32))
    la.request()
    update = la.apply(hyp("w0 w1 w2 w3 w4 w5"))
    assert [w.text for w in update.committed] == [" w0", " w1", " w2", " w3"]


def test_words_piled_up_at_one_instant_are_not_agreed_on() -> None:
    """The spontaneous recording: two decodes looped back over a sentence already committed,
    30 words aligned to 35.8-35.9 s, and agreed; no speech fits 4 words in 0.2 s."""
    la = LocalAgreement()
    la.add_audio(np.zeros(4 * SR, dtype=np.float32))
    said = words("this is the sixth form", 0.0)
    loop = [Word(w.text, 2.5, 2.5) for w in said]
    first = la.apply(Hypothesis(said + loop))
    assert [w.text for w in first.partial] == [w.text for w in said]  # the pile is dropped
    second = la.apply(Hypothesis(said + loop))
    assert [w.text for w in second.committed] == [w.text for w in said] and second.partial == []
