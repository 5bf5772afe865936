"""glibc's allocator, set so that the memory of a burst goes back to the system afterwards.

By default glibc serves allocations above M_MMAP_THRESHOLD (128 KiB) with their own mappings,
returned to the system on free, but each such free raises the threshold to the freed size (up to
32 MiB). After one burst of uploads and decoded images the threshold sits near 32 MiB, so the next
bursts' buffers come from the heap arenas, which seldom shrink: RSS stays at the burst's peak.
Fixing the threshold turns that adjustment off; trimming the arenas when the service falls idle
returns what smaller allocations left behind. Elsewhere than glibc both are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from functools import lru_cache

logger = logging.getLogger(__name__)

# mallopt parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Buffers of this size and more get their own mapping: uploads and decoded photos. Below it
# stay the models' per-call buffers, which a mapping each would slow: at 256 KiB a batch of 32
# faces took 12-25% longer in Registry.predict than with glibc's default; at 4 MiB it does not.
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
# Free memory at the top of the main heap beyond this goes back at once.
TRIM_THRESHOLD_BYTES = 8 * 1024 * 1024


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def tune_allocator() -> bool:
    """Fix glibc's mmap and trim thresholds (see the module docstring); False when not glibc."""
    libc = _libc()
    if libc is None:
        return False
    tuned = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
    if not tuned:
        logger.warning("glibc refused the allocator settings; memory may stay high after bursts")
    return tuned


def release_free_memory() -> None:
    """Give the free memory of every heap arena back to the system (glibc's malloc_trim)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
