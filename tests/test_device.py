"""CPU thread choice: other processes' busy cores are measured now (not the lagging load average); the
allocator setting of the clearct command."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from clearct.common.device import busy_cores, channels_last, cpu_threads


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_spinning_process_counts_as_a_busy_core_and_this_one_does_not():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert busy_cores(0.5) >= 0.6
    finally:
        spinner.kill()
        spinner.wait()
    n, why = cpu_threads()
    assert 1 <= n <= len(os.sched_getaffinity(0)) and "cores" in why


def test_channels_last_converts_modules_and_images_only():
    conv = channels_last(torch.nn.Conv2d(3, 4, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    image = channels_last(torch.randn(2, 3, 8, 8))
    assert image.is_contiguous(memory_format=torch.channels_last)
    flags = torch.ones(5)
    assert channels_last(flags) is flags


ALLOCATION_PROBE = """
import ctypes
from clearct.common.device import reuse_freed_memory
import torch

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
tuned = reuse_freed_memory()
before = libc.mallinfo2().hblks
x = torch.empty(10_000_000)  # 40 MB
print(tuned, libc.mallinfo2().hblks - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
@pytest.mark.parametrize("setting, expected", [("1", "True 0"), ("0", "False 1")])
@pytest.mark.slow
def test_allocator_tuning_serves_large_tensors_from_the_heap_unless_switched_off(setting, expected):
    # a fresh process each: the setting is process-wide; glibc counts the blocks it mmaps (mallinfo2().hblks)
    env = {**os.environ, "CLEARCT_MALLOC_TUNING": setting}
    out = subprocess.run([sys.executable, "-c", ALLOCATION_PROBE], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert " ".join(out) == expected
