"""CPU thread choice: other processes' busy cores are measured now (not the lagging load average)."""

from __future__ import annotations

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
    # our own work is not "other processes"
    x = torch.randn(512, 512)
    n, why = cpu_threads()
    assert 1 <= n <= (len(__import__("os").sched_getaffinity(0))) and "cores" in why
    assert (x @ x).shape == (512, 512)


def test_channels_last_converts_modules_and_images_only():
    conv = channels_last(torch.nn.Conv2d(3, 4, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    image = channels_last(torch.randn(2, 3, 8, 8))
    assert image.is_contiguous(memory_format=torch.channels_last)
    flags = torch.ones(5)
    assert channels_last(flags) is flags
