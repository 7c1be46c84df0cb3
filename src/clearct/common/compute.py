"""Compute accounting: wall and CPU seconds, peak memory and FLOPs of a command and of its stages (one entry per
fold fit), written to ``compute.json`` in the run folder.

How each number is measured:

- ``wall_s``: ``time.perf_counter`` (CUDA is synchronised first when it is in use, so queued kernels count).
- ``cpu_s``: ``os.times()`` user + system seconds of this process and of its children that have exited
  (data-loader workers count once they are joined).
- ``peak_rss_bytes``: on Linux the resident-set high-water mark (``VmHWM``), reset when a measurement opens
  (``/proc/self/clear_refs``), so a stage's peak is its own even when several commands run in one process
  (``peak_rss_scope: "stage"``); where that is not possible, ``getrusage``'s peak since the process started
  (``"process"``).
- ``peak_cuda_bytes``: ``torch.cuda.max_memory_allocated``, reset the same way; ``null`` when CUDA is not in use.
- ``flops``: an *estimate*: ``torch.utils.flop_counter.FlopCounterMode`` counts one representative step (forward
  and backward for training, forward for inference) and that count is multiplied by the number of steps. The
  counter sees matrix products, convolutions and attention (the bulk of the work), not element-wise ops or the
  optimizer; steps of other shapes (a shorter last batch, bags of other lengths) are counted as the probe's.

Usage: :func:`clearct.common.runs.start_run` opens the run's measurement; a command wraps each fit in
``with stage(out, name) as m: …; m.flops = …`` and calls :func:`finish_run` at the end. This module imports
torch only when it is already loaded, so ``clearct --help`` stays fast.
"""

from __future__ import annotations

import copy
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from clearct import __version__
from clearct.common.atomic import atomic_write_text

FILE = "compute.json"
FLOPS_METHOD = ("torch.utils.flop_counter.FlopCounterMode on one representative step × the number of steps "
                "(matmul/conv/attention, forward + backward for training; not element-wise ops or the optimizer)")
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass
class Measurement:
    """One measured span (a command or one of its stages). ``flops``/``steps`` are filled in by the caller."""

    name: str
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_bytes: int = 0
    peak_rss_scope: str = "stage"
    peak_cuda_bytes: int | None = None
    flops: int | None = None
    steps: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    _t0: float = 0.0
    _cpu0: float = 0.0

    def to_json(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("name", "wall_s", "cpu_s", "peak_rss_bytes", "peak_rss_scope",
                                           "peak_cuda_bytes", "flops", "steps")}
        d["wall_s"], d["cpu_s"] = round(self.wall_s, 3), round(self.cpu_s, 3)
        return {**d, **self.extra}


_OPEN: list[Measurement] = []  # measurements in progress; every open one sees the peaks of the spans inside it
_RUNS: dict[str, tuple[str, Measurement, list[Measurement], list[float]]] = {}


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _torch_cuda():
    torch = sys.modules.get("torch")  # never import torch here: this runs inside every command's start_run
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda
    return None


def _rss_high_water_and_reset() -> tuple[int, str]:
    """The RSS peak since the last reset (then reset it), or the process peak where resetting is not possible."""
    try:
        kb = next(int(line.split()[1]) for line in _STATUS.read_text().splitlines() if line.startswith("VmHWM"))
        _CLEAR_REFS.write_text("5")  # Linux ≥ 4.0: "5" resets the peak RSS to the current RSS
        return kb * 1024, "stage"
    except (OSError, StopIteration, ValueError):
        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, "process"


def _sync_peaks() -> None:
    """Hand the peaks since the last reset to every open measurement, then reset them."""
    rss, scope = _rss_high_water_and_reset()
    cuda = _torch_cuda()
    peak_cuda = None
    if cuda is not None:
        cuda.synchronize()
        peak_cuda = int(cuda.max_memory_allocated())
        cuda.reset_peak_memory_stats()
    for m in _OPEN:
        m.peak_rss_bytes = max(m.peak_rss_bytes, rss)
        m.peak_rss_scope = scope
        if peak_cuda is not None:
            m.peak_cuda_bytes = max(m.peak_cuda_bytes or 0, peak_cuda)


def _open(name: str) -> Measurement:
    _sync_peaks()
    m = Measurement(name, _t0=time.perf_counter(), _cpu0=_cpu_seconds())
    _OPEN.append(m)
    return m


def _close(m: Measurement) -> Measurement:
    _sync_peaks()
    m.wall_s = time.perf_counter() - m._t0
    m.cpu_s = _cpu_seconds() - m._cpu0
    if m in _OPEN:
        _OPEN.remove(m)
    return m


@contextmanager
def measure(name: str) -> Iterator[Measurement]:
    """Measure the block; the Measurement is complete once the block has ended."""
    m = _open(name)
    try:
        yield m
    finally:
        _close(m)


def _key(out: str | Path) -> str:
    return str(Path(out).resolve())


def begin_run(out: str | Path, command: str) -> None:
    """Open the run-level measurement of ``command`` writing into ``out`` (called by ``start_run``)."""
    old = _RUNS.pop(_key(out), None)
    if old is not None and old[1] in _OPEN:
        _OPEN.remove(old[1])
    _RUNS[_key(out)] = (command, _open(command), [], list(os.getloadavg()))


@contextmanager
def stage(out: str | Path, name: str) -> Iterator[Measurement]:
    """Measure one stage of the run in ``out`` (e.g. one fold fit); it is listed in that run's compute.json."""
    with measure(name) as m:
        yield m
    run = _RUNS.get(_key(out))
    if run is not None:
        run[2].append(m)


def finish_run(out: str | Path, *, flops: int | None = None, steps: int | None = None, device: Any = None,
               file: str = FILE, **extra: Any) -> dict[str, Any]:
    """Close the run's measurement and write ``out/compute.json``; returns what was written.

    ``flops``/``steps``: the command's totals when it has no stages (pretrain, extract); with stages the total is
    the sum of the stages' FLOPs. Without a ``start_run`` for ``out`` in this process the whole process is
    measured (wall time from the process start). ``file``: another name (one per torchrun rank).
    """
    run = _RUNS.pop(_key(out), None)
    stages: list[Measurement]
    if run is None:
        command, total, stages, load0 = Path(out).name, _process_measurement(), [], list(os.getloadavg())
    else:
        command, total, stages, load0 = run
        _close(total)
    staged = [s.flops for s in stages if s.flops is not None]
    total.flops = flops if flops is not None else (sum(staged) if staged else None)
    total.steps = steps if steps is not None else (sum(s.steps or 0 for s in stages) if stages else None)
    doc = {
        "command": command, "clearct_version": __version__,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": _host(device, load0),
        "total": {k: v for k, v in total.to_json().items() if k != "name"},
        "stages": [s.to_json() for s in stages],
        "flops_method": FLOPS_METHOD, **extra,
    }
    atomic_write_text(Path(out) / file, json.dumps(doc, indent=1) + "\n")
    return doc


def _process_measurement() -> Measurement:
    m = Measurement("process", cpu_s=_cpu_seconds())
    try:  # start time of this process from /proc (clock ticks after boot)
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(x.split()[1]) for x in Path("/proc/stat").read_text().splitlines() if x.startswith("btime"))
        m.wall_s = time.time() - (boot + ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, StopIteration, IndexError):
        m.wall_s = float("nan")
    m.peak_rss_bytes, m.peak_rss_scope = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process"
    return m


def _host(device: Any, load0: list[float]) -> dict[str, Any]:
    torch = sys.modules.get("torch")
    name = str(device) if device is not None else "cpu"
    if torch is not None and device is not None and getattr(device, "type", "") == "cuda":
        name += f" ({torch.cuda.get_device_name(device)})"
    return {"device": name, "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch_threads": torch.get_num_threads() if torch is not None else None,
            "load_avg_start": [round(x, 2) for x in load0],
            "load_avg_end": [round(x, 2) for x in os.getloadavg()]}


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs torch's flop counter sees while ``fn()`` runs."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def step_flops(model: Any, forward: Callable[[Any], Any], *, backward: bool = True) -> int:
    """FLOPs of ``forward(copy)`` (+ the backward of its output's sum) on a deep copy of ``model``: the real
    model's weights, gradients, BatchNorm statistics and momentum branches stay as they were."""
    probe = copy.deepcopy(model)

    def run() -> None:
        out = forward(probe)
        if backward:
            out.float().sum().backward()

    return count_flops(run)


def finish_steps(out: str | Path, model: Any, forward: Callable[[Any], Any], *, steps: int, device: Any,
                 processes: int = 1, write: bool = True, **extra: Any) -> None:
    """compute.json of a command that ran ``steps`` optimizer steps of ``model`` (pretrain): one step probed with
    :func:`step_flops` × ``steps`` × ``processes`` (torchrun ranks each run every step). Under torchrun every rank
    must call this (the probe's forward gathers across ranks); only ``write`` ones write."""
    flops = step_flops(model, forward) * steps * processes
    if write:
        finish_run(out, flops=flops, steps=steps, device=device, processes=processes, **extra)


class FlopSample:
    """FLOPs of repeated calls of one kind (a scan embedded): the first call is counted and its FLOPs per unit
    (rows written) are applied to the units of every call."""

    def __init__(self) -> None:
        self.per_unit: float | None = None
        self.units = 0

    def run(self, fn: Callable[..., Any], *args: Any, units: Callable[[Any], int] = len, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, counted when it is the first call; ``units(result)`` is its size."""
        if self.per_unit is None:
            box: list[Any] = []
            flops = count_flops(lambda: box.append(fn(*args, **kwargs)))
            result = box[0]
            self.per_unit = flops / max(units(result), 1)
        else:
            result = fn(*args, **kwargs)
        self.units += units(result)
        return result

    @property
    def total(self) -> int | None:
        return None if self.per_unit is None else round(self.per_unit * self.units)


def load_compute(folder: str | Path) -> dict[str, Any] | None:
    """``folder/compute.json`` as a dict, or None when it is missing or unreadable."""
    try:
        return json.loads((Path(folder) / FILE).read_text())
    except (OSError, ValueError):
        return None
