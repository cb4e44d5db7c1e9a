"""glibc's malloc set so that a process's RSS follows its live tensors: `minigrpo train --release-memory`.

PyTorch's CPU tensors come from malloc. glibc serves a block below its mmap threshold from its heap,
and a freed heap block stays with the process for reuse; the threshold itself climbs (up to 32 MiB)
each time a larger block is freed, so after the first step nearly every activation lives on the heap.
A training step frees and allocates activation-sized blocks (0.1 to 32 MiB) in an order the heap
cannot reuse well: in one checkpointed forward of the Qwen2.5-0.5B shape, RSS grows by ~50 MiB per
layer of memory that is free but not returned, against ~3 MiB per layer of live tensors (a
block's saved input). A fixed threshold of 64 KiB sends every larger block to mmap, which free()
returns to the kernel at once: the peak RSS of that bench (bench/bench_scale.py) falls from 4.1 to
2.5 GiB. The price is paid on every new block: the kernel maps and zeroes its pages, which made
that step 14% slower (26% before log-probs went through vocabulary blocks). Hence a flag, not a
default, and a no-op on a non-glibc C library (macOS).
"""
import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # glibc's <malloc.h>; setting it also turns off the threshold's climbing
THRESHOLD = 64 * 1024  # bytes: blocks this size and larger are mmapped, so returned to the OS when freed


def release_freed_memory(threshold=THRESHOLD):
    """Make glibc mmap every block of `threshold` bytes or more, for the rest of this process.

    Returns True if glibc took the setting, False where the C library is not glibc (nothing changes).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # glibc only; AttributeError elsewhere
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, threshold) == 1
