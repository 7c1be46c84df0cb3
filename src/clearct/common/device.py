"""How every command uses the machine: the device (``auto`` picks CUDA when present, else CPU), bf16 autocast on
CUDA, the CPU thread count for training, channels-last memory format, and the glibc allocator setting of the
``clearct`` command."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any


def resolve_device(name: str = "auto") -> Any:
    """Return a ``torch.device`` for ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def reuse_freed_memory() -> bool:
    """Let glibc serve large CPU tensors from memory the process freed before instead of fresh ``mmap`` pages.

    By default every tensor above glibc's mmap threshold gets new pages that fault in on first touch, which about
    doubles the cost of an element-wise pass (measured in benchmarks/RESULTS.md "vmamba"). Raising the thresholds
    keeps freed blocks for reuse; the peak
    memory is the same, but the process returns less of it between peaks. Called by the ``clearct`` command (and
    the benchmarks); set ``CLEARCT_MALLOC_TUNING=0`` to leave the allocator alone. Returns whether it applied.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux") or os.environ.get("CLEARCT_MALLOC_TUNING", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, …)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))


def map_large_blocks(threshold_mb: int = 32) -> bool:
    """Serve allocations of ``threshold_mb`` MB and more from their own memory maps again (after
    :func:`reuse_freed_memory`), so freeing them returns the pages at once.

    For the MIL commands: their inference allocates a ~100 MB padded batch per step while small per-bag results stay
    alive, and with every block kept in the heap the freed batches could not be reused in place — the process grew
    by ≈ 1.2 MB per bag inferred (2.35 GB after 1,000 bags; 12 GB in a 5,000-bag deploy). With large blocks mapped it
    stays flat (1.1 GB after 1,000 bags; benchmarks/RESULTS.md ``## scale``). Returns whether it applied.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux") or os.environ.get("CLEARCT_MALLOC_TUNING", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_mmap_threshold = -3
    return bool(libc.mallopt(m_mmap_threshold, threshold_mb << 20))


def autocast_for(device: Any, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA, a no-op on CPU (fp32 there keeps results reproducible)."""
    import torch

    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def busy_cores(seconds: float = 0.3) -> float | None:
    """How many cores other processes keep busy now: /proc/stat's busy time over ``seconds`` minus this process's
    own (/proc/self/stat); None where /proc is not there. Unlike the load average it does not lag a minute behind
    (a demo stage that follows two synth workers would see load ≈ 2 on an idle machine)."""
    def sample() -> tuple[float, float]:
        from pathlib import Path

        fields = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0.0)  # minus idle and iowait
        own = sum(float(v) for v in Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[11:13])
        return busy, own

    try:
        import time

        busy0, own0 = sample()
        time.sleep(seconds)
        busy1, own1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK") * seconds
    return max(0.0, (busy1 - busy0 - (own1 - own0)) / ticks)


def cpu_threads() -> tuple[int, str]:
    """Intra-op threads for CPU training: one per core that other processes leave idle, at least one;
    ``OMP_NUM_THREADS`` wins. A parallel region on a core another process holds waits at every barrier, so threads
    on busy cores slow a step down many times over, while on idle cores each thread adds nearly its share
    (benchmarks/RESULTS.md "recipe" and "drasclr_step")."""
    import torch

    if "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads(), "OMP_NUM_THREADS"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    others = busy_cores()
    if others is None:
        others, what = (os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0), "load average"
    else:
        what = "cores busy with other processes"
    return max(1, min(cores, round(cores - others))), f"{cores} cores, {others:.1f} {what}"


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Run a block on ``n`` intra-op threads, restoring the count afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def training_threads(choose: bool, say: Callable[[str], None], what: str) -> Iterator[None]:
    """Run a training loop on :func:`cpu_threads` intra-op threads, announced with ``say``, when ``choose`` (CPU
    training in one process); otherwise on the threads as they are."""
    if not choose:
        yield
        return
    n, why = cpu_threads()
    say(f"{what}: {n} torch thread(s) ({why}; set OMP_NUM_THREADS to choose)")
    with threads(n):
        yield


def channels_last(x: Any) -> Any:
    """A module or a 4-D tensor in channels-last memory format (other tensors as they are): oneDNN's and cuDNN's
    convolutions run faster on it (benchmarks/RESULTS.md "recipe")."""
    import torch

    if isinstance(x, torch.Tensor) and x.dim() != 4:
        return x
    return x.to(memory_format=torch.channels_last)
