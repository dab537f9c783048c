"""The ingress's heap: keep freed audio buffers from staying in the process for good.

What the probe saw (RSS 143 -> 1,196 MB over audio floods, 0 sessions left) is glibc, not a
leak: an audio flood allocates many numpy buffers of 64 KiB - 2 MiB.  glibc serves blocks over
``M_MMAP_THRESHOLD`` with mmap and returns them on free, but it raises that threshold to the
size of each mmapped block freed (up to 32 MiB), so after the first flood the audio buffers come
from the heap arenas (one per thread that allocated, up to 8 x cores), where fragmentation keeps
them.  A fixed threshold keeps big buffers on mmap (returned at once), two arenas bound the
spread, and ``malloc_trim`` when the replica goes idle returns what the arenas hold free.
Elsewhere than glibc these are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger("ray.serve")
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 128 * 1024  # glibc's initial value, now fixed (no dynamic raise)


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt  # noqa: B018  (glibc only)
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def tune_allocator(arenas: int = 2) -> bool:
    """Fix the mmap threshold and cap the arenas; True where glibc took it."""
    if _LIBC is None:
        return False
    ok = bool(_LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(_LIBC.mallopt(_M_ARENA_MAX, arenas))
    if not ok:
        log.warning("mallopt refused the ingress allocator settings")
    return ok


def trim() -> None:
    """Give free heap memory back to the OS (cheap when little is free)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default), from /proc; 0 where unknown."""
    try:
        with open(f"/proc/{pid or os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
