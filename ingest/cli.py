"""``rayscribe``: stream a WAV file to a rayscribe server and print the transcript live."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from importlib.resources import files
from pathlib import Path
from typing import TextIO

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
    stream_file,
)
from ingest.errors import RayscribeError

SAMPLE_WAV = Path(str(files("ingest") / "samples" / "jfk.wav"))


def printer(out: TextIO | None = None) -> OnMessage:
    stream = out or sys.stdout

    def on_message(message: m.AnyServerMessage | ClientEvent) -> None:
        if isinstance(message, Reconnecting):
            line = f"[reconnecting] attempt {message.attempt}: {message.reason}"
        elif isinstance(message, SessionResumed):
            line = (
                f"[resumed] session {message.session_id} after {message.downtime_s:.2f}s: "
                f"resending {message.resent_s:.1f}s from {message.audio_offset:.2f}s, "
                f"{message.missed_finals} missed finals replayed"
            )
        elif isinstance(message, AudioGap):
            line = f"[gap] audio {message.start_s:.2f}-{message.end_s:.2f}s was lost (replay buffer full)"
        elif isinstance(message, m.Ready):
            line = f"[ready] session {message.session_id}"
        elif isinstance(message, m.Partial):
            line = f"  partial  ~{message.audio_end:6.2f}s  {message.text}"
        elif isinstance(message, m.Final):
            line = f"FINAL  {message.start:6.2f}-{message.end:6.2f}s  {message.text}"
        elif isinstance(message, m.Error):
            line = f"[error] {message.code}: {message.message}"
        elif isinstance(message, m.Closed):
            s = message.summary
            line = (
                f"[closed] {s.audio_seconds:.1f}s audio, {s.finals} finals, {s.words} words, "
                f"{s.decodes} decodes"
            )
        else:
            return
        print(line, file=stream, flush=True)

    return on_message


def stream_main(url: str, path: Path, fast: bool, interim: bool) -> StreamResult:
    options = StreamOptions(realtime=not fast, interim_results=interim)
    return asyncio.run(stream_file(url, path, options, printer()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rayscribe", description=__doc__)
    parser.add_argument(
        "wav",
        nargs="?",
        type=Path,
        default=SAMPLE_WAV,
        help="16-bit PCM WAV to stream (default: bundled sample)",
    )
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--api-key", default=None, help="API key (default: $RAYSCRIBE_API_KEY)")
    parser.add_argument("--fast", action="store_true", help="send as fast as possible")
    parser.add_argument("--no-interim", action="store_true", help="finals only")
    args = parser.parse_args(argv)
    if args.api_key:  # every StreamOptions (and --procs children) read it from the env
        os.environ["RAYSCRIBE_API_KEY"] = args.api_key
    try:
        result = stream_main(args.url, args.wav, args.fast, not args.no_interim)
    except (OSError, RayscribeError) as e:
        print(f"rayscribe: {e}", file=sys.stderr)
        return 2
    print(f"\nTranscript: {result.text}")
    return 0 if result.error is None else 1


if __name__ == "__main__":
    sys.exit(main())
