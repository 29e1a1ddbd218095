"""glibc's malloc set up for streaming vector blocks: applied once per process, when a store is first opened.

Exact search reads every stored vector, in Arrow blocks of 32-128 MB (`BLOCK_ROWS` rows). With glibc's
defaults each block Lance reads is a fresh mmap: the kernel zeroes and faults in its pages, and freeing
the block unmaps them again, so the scan ran at ~2 GB/s of vectors however fast the page cache was.
Three settings let a freed block's memory serve the next one:

- M_MMAP_THRESHOLD 256 MB: allocations below it come from the heap rather than a fresh mmap;
- M_TRIM_THRESHOLD 1 GB: freed heap memory up to that much is kept for reuse, not handed back;
- M_ARENA_MAX 1: every thread allocates from the main heap. Other threads' arenas live in 64 MB heaps, so
  a 64 MB float32 block read by one of Lance's threads would still be a fresh mmap.

The cost: a process keeps up to 1 GB of freed memory instead of returning it at once. Lance's reader
threads must not have allocated yet, hence the first open. `benchmarks/bench_store.py --step malloc` measures
both settings (docs/performance.md). TORCHCLIP_MALLOC=default leaves malloc as it is; other C libraries
(musl, macOS, Windows) are left alone.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import sys

__all__ = ["MALLOC_SETTINGS", "keep_freed_blocks"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # glibc's malloc.h
MALLOC_SETTINGS = {_M_MMAP_THRESHOLD: 256 << 20, _M_TRIM_THRESHOLD: 1 << 30, _M_ARENA_MAX: 1}


@functools.cache
def keep_freed_blocks() -> bool:
    """Apply MALLOC_SETTINGS (once per process); whether they are in effect."""
    if os.environ.get("TORCHCLIP_MALLOC") == "default":
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(option, value) == 1 for option, value in MALLOC_SETTINGS.items())
