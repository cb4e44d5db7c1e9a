"""`--release-memory` (minigrpo/malloc.py): with it, freed activation-sized blocks leave the process.

The pattern is a training step's in miniature: 200 blocks of 1 MiB, each followed on glibc's heap by a
32 KiB block that stays alive, then the big ones are freed. By default (after a 16 MiB block was
freed, so glibc's adaptive threshold has climbed past 1 MiB) they stay in the heap, held apart by
the small ones: RSS keeps ~200 MiB. With the setting every block of 64 KiB or more is mmapped and
returned when freed. Run in fresh processes: the setting is process-wide and cannot be undone.
"""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = """
import sys, torch
from minigrpo.malloc import release_freed_memory
if sys.argv[1] == "on" and not release_freed_memory():
    print("not glibc")
    sys.exit(0)
def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) / 1024
torch.ones(16 << 20, dtype=torch.uint8)  # freed at once: glibc's threshold climbs to 16 MiB
base = rss()
big, keep = [], []
for _ in range(200):
    big.append(torch.ones(1 << 18))  # 1 MiB
    keep.append(torch.ones(8192))  # 32 KiB, alive to the end, between the big ones
del big
print(round(rss() - base))
"""


def _kept_mib(mode):
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, cwd=ROOT, check=True)
    return out.stdout.strip()


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads RSS from /proc")
def test_release_memory_returns_freed_blocks_to_the_os():
    on = _kept_mib("on")
    if on == "not glibc":
        pytest.skip("the C library is not glibc: --release-memory is a no-op there")
    off = _kept_mib("off")
    if int(off) < 100:
        pytest.skip(f"this glibc returned the freed blocks by itself ({off} MiB kept): nothing to show")
    assert int(on) < 25, f"{on} MiB of 200 freed MiB still held with the setting (without it: {off} MiB)"
