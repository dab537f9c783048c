"""``rayscribe``: stream audio to a rayscribe server and print the transcript live.

    rayscribe talk.mp3                                   # any file FFmpeg decodes (PyAV)
    arecord -f S16_LE -r 16000 -c 1 -t raw | rayscribe - --rate 16000
    ffmpeg -re -i talk.m4a -f s16le -ar 16000 -ac 1 - | rayscribe -
    rayscribe talk.mp3 --format srt > talk.srt          # captions: txt, json, srt or vtt

On a terminal the provisional partial is one line rewritten in place and finals scroll above
it; piped, every message is a line of its own.  With ``--format``, the transcript file goes to
``--output`` (the live view stays on stdout) or to stdout (the live view moves to stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from importlib.resources import files
from pathlib import Path
from typing import TextIO

import numpy as np

from ingest import captions
from ingest import messages as m
from ingest.client import (
    DEFAULT_URL,
    AudioGap,
    ClientEvent,
    OnMessage,
    Reconnecting,
    SessionResumed,
    StreamOptions,
    StreamResult,
    open_stream,
    paced,
)
from ingest.errors import RayscribeError
from ingest.sources import ENCODINGS, load_file, read_pcm

SAMPLE_WAV = Path(str(files("ingest") / "samples" / "jfk.wav"))
_CLEAR = "\r\x1b[2K"  # carriage return + erase the line: the partial is redrawn in place


def describe(message: m.AnyServerMessage | ClientEvent) -> str | None:
    """One line for a message or client event (None: not shown)."""
    if isinstance(message, Reconnecting):
        return f"[reconnecting] attempt {message.attempt}: {message.reason}"
    if isinstance(message, SessionResumed):
        return (
            f"[resumed] session {message.session_id} after {message.downtime_s:.2f}s: "
            f"resending {message.resent_s:.1f}s from {message.audio_offset:.2f}s, "
            f"{message.missed_finals} missed finals replayed"
        )
    if isinstance(message, AudioGap):
        return f"[gap] audio {message.start_s:.2f}-{message.end_s:.2f}s was lost (replay buffer full)"
    if isinstance(message, m.Ready):
        return f"[ready] session {message.session_id}"
    channel = getattr(message, "channel", None)
    tag = f"[ch{channel}] " if channel is not None else ""
    if isinstance(message, m.Partial):
        return f"  {tag}partial  ~{message.audio_end:6.2f}s  {message.text}"
    if isinstance(message, m.Final):
        end = "  [speech_final]" if message.speech_final else ""
        return f"{tag}FINAL  {message.start:6.2f}-{message.end:6.2f}s  {message.text}{end}"
    if isinstance(message, m.SpeechStarted):
        return f"[speech started] {message.timestamp:.2f}s"
    if isinstance(message, m.UtteranceEnd):
        return f"[utterance end] last word ended {message.last_word_end:.2f}s"
    if isinstance(message, m.HookResult):
        return f"[{message.hook}] {message.utterance.text!r} -> {json.dumps(message.result)}"
    if isinstance(message, m.HookError):
        return f"[{message.hook} error] {message.code}: {message.message}"
    if isinstance(message, m.Error):
        return f"[error] {message.code}: {message.message}"
    if isinstance(message, m.Closed):
        s = message.summary
        counts = f"{s.finals} finals, {s.words} words, {s.decodes} decodes"
        return f"[closed] {s.audio_seconds:.1f}s audio, {counts}"
    return None


def printer(out: TextIO | None = None) -> OnMessage:
    """Every message as a line of its own (logs, pipes)."""
    stream = out or sys.stdout

    def on_message(message: m.AnyServerMessage | ClientEvent) -> None:
        line = describe(message)
        if line is not None:
            print(line, file=stream, flush=True)

    return on_message


class TerminalView:
    """On a terminal: the partial is one provisional line rewritten in place; finals and
    notices are printed above it and scroll."""

    def __init__(self, out: TextIO, width: int | None = None) -> None:
        self.out = out
        self.width = width or shutil.get_terminal_size().columns
        self.partial = ""

    def __call__(self, message: m.AnyServerMessage | ClientEvent) -> None:
        if isinstance(message, m.Partial):
            self.partial = message.text
        elif isinstance(message, m.Final):
            self._line(f"{message.start:7.2f}s  {message.text}")
            self.partial = ""
        elif isinstance(message, m.Closed):
            self.partial = ""
            self._line(describe(message) or "")
        elif (line := describe(message)) is not None and not isinstance(message, m.Ready):
            self._line(line)
        self._draw()

    def _line(self, text: str) -> None:
        self.out.write(f"{_CLEAR}{text}\n")

    def _draw(self) -> None:
        shown = f"   ...  {self.partial}" if self.partial else ""
        if len(shown) > self.width - 1:  # one row only, or the rewrite would leave residue
            shown = "   ... …" + shown[len(shown) - self.width + 9 :]
        self.out.write(f"{_CLEAR}\x1b[2m{shown}\x1b[0m" if shown else _CLEAR)
        self.out.flush()


def view_for(out: TextIO) -> OnMessage:
    return TerminalView(out) if out.isatty() else printer(out)


async def run_stream(
    url: str,
    source: AsyncIterator[np.ndarray],
    rate: int,
    options: StreamOptions,
    view: OnMessage,
) -> StreamResult:
    """Stream ``source`` through the live API, showing every event as it arrives."""
    async with open_stream(url, rate, options) as stream:
        feeder = asyncio.create_task(stream.feed(source))
        try:
            async for event in stream:
                view(event)
        finally:
            feeder.cancel()
    return stream.result


def stream_main(
    url: str,
    path: Path,
    fast: bool,
    interim: bool,
    out: TextIO | None = None,
    options: StreamOptions | None = None,
) -> StreamResult:
    """Stream an audio file at real-time pace (unless ``fast``); ``options``: more of them
    (events, hook, channels: a multi-channel session sends the file's channels apart)."""
    base = options or StreamOptions()
    audio = load_file(path, keep_channels=base.channels > 1)
    samples = audio.samples
    channels = samples.shape[1] if samples.ndim == 2 else 1
    if channels == 1:  # one channel: a plain session
        samples = samples.reshape(-1)
    opts = dataclasses.replace(base, realtime=not fast, interim_results=interim, channels=channels)
    source = paced(samples, audio.sample_rate, opts)
    return asyncio.run(run_stream(url, source, audio.sample_rate, opts, view_for(out or sys.stdout)))


def stdin_main(
    url: str,
    rate: int,
    encoding: str,
    channels: int,
    interim: bool,
    out: TextIO | None = None,
    options: StreamOptions | None = None,
) -> StreamResult:
    """Stream raw PCM from stdin as it arrives (a live pipe paces itself); ``channels`` are
    mixed down unless ``options.channels`` asks for them apart."""
    opts = dataclasses.replace(options or StreamOptions(), interim_results=interim)
    apart = opts.channels > 1
    if apart:
        opts = dataclasses.replace(opts, channels=channels)
    source = read_pcm(sys.stdin.buffer, ENCODINGS[encoding], channels, mix=not apart)
    return asyncio.run(run_stream(url, source, rate, opts, view_for(out or sys.stdout)))


def write_transcript(result: StreamResult, fmt: captions.Format, output: str | None) -> None:
    """The transcript file: to ``output``, or stdout when it is None or ``-``."""
    text = captions.render(fmt, result.finals, result.session_id)
    if output is None or output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        Path(output).write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rayscribe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "audio",
        nargs="?",
        default=str(SAMPLE_WAV),
        help="audio file (wav, flac, mp3, m4a, ogg/opus, ...), or - for raw PCM on stdin (default: sample)",
    )
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--api-key", default=None, help="API key (default: $RAYSCRIBE_API_KEY)")
    parser.add_argument("--rate", type=int, default=16000, help="stdin: sample rate (Hz)")
    parser.add_argument("--encoding", choices=sorted(ENCODINGS), default="s16le", help="stdin: sample format")
    parser.add_argument("--channels", type=int, default=1, help="stdin: interleaved channels (mixed down)")
    parser.add_argument("--fast", action="store_true", help="files: send as fast as possible")
    parser.add_argument("--no-interim", action="store_true", help="finals only")
    parser.add_argument(
        "--format",
        choices=captions.FORMATS,
        default=None,
        help="write the transcript as txt, json (finals with word timings), srt or vtt "
        "(default: only the live view and a 'Transcript:' line)",
    )
    parser.add_argument(
        "--output",
        "-o",
        default=None,
        help="--format's file (default: stdout; the live view then goes to stderr)",
    )
    parser.add_argument(
        "--vad-events",
        action="store_true",
        help="show when speech starts and utterances end (voice activity)",
    )
    parser.add_argument(
        "--multichannel",
        action="store_true",
        help="transcribe each channel of the file (or of --channels on stdin) on its own and "
        "print the merged, channel-labelled transcript",
    )
    parser.add_argument(
        "--hook",
        default=None,
        help="send each utterance to this server-side handler (e.g. intents) and show its "
        "answers (turns on --vad-events)",
    )
    args = parser.parse_args(argv)
    if args.output is not None and args.format is None:
        parser.error("--output needs --format")
    # the transcript file owns stdout when it goes there: the live view moves to stderr
    view_out = sys.stderr if args.format is not None and args.output in (None, "-") else sys.stdout
    if args.api_key:  # every StreamOptions (and --procs children) read it from the env
        os.environ["RAYSCRIBE_API_KEY"] = args.api_key
    options = StreamOptions(
        vad_events=args.vad_events or args.hook is not None,
        hook=args.hook,
        channels=m.MAX_CHANNELS if args.multichannel else 1,  # the source's own count is used
    )
    interim = not args.no_interim
    try:
        if args.audio == "-":
            pcm = (args.rate, args.encoding, args.channels)
            result = stdin_main(args.url, *pcm, interim, view_out, options)
        else:
            result = stream_main(args.url, Path(args.audio), args.fast, interim, view_out, options)
        if args.format is not None:
            write_transcript(result, args.format, args.output)
    except (OSError, RayscribeError) as e:
        print(f"rayscribe: {e}", file=sys.stderr)
        return 2
    if args.format is None and result.transcript is not None:
        print("\nTranscript:")
        for seg in result.transcript.segments:
            print(f"  [channel {seg.channel}] {seg.start:7.2f}-{seg.end:7.2f}s  {seg.text}")
    elif args.format is None:
        print(f"\nTranscript: {result.text}")
    return 0 if result.error is None else 1


if __name__ == "__main__":
    sys.exit(main())
