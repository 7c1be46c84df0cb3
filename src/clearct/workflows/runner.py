"""The one runner of the multi-stage workflows (demo, benchmark): a plan is a list of :class:`Step`; each runs a
stage's Python function with its config model in this process and writes into its own folder.

Resume: a step that finished writes ``step.json`` (its config without the fields that do not change a result, and
the sha256 of the markers of the earlier steps whose folders its config names). A re-run skips a step whose
marker holds the same config and upstream hashes and runs the others again (each stage then resumes inside itself:
synth reuses scans, extract skips feature files, crossval reloads fold models). A re-run upstream step rewrites its
marker, so everything that reads its output runs again too.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from clearct.common.atomic import atomic_write_text
from clearct.common.errors import ClearctError
from clearct.common.runs import LOG, sha256_file, stage_logs

MARKER = "step.json"
# config fields that do not change a step's result (a finished step is not redone when only these differ)
NOT_RESULT = frozenset({"device", "workers", "resume", "overwrite"})


@dataclass(frozen=True)
class Step:
    name: str  # e.g. "pretrain lecl-3"
    run: Callable[[Any], int | None]  # the stage's function: a command's run_* or another step function
    config: BaseModel  # what ``run`` is called with
    out: Path  # the step's folder (holds the marker)
    description: str = ""


@dataclass(frozen=True)
class StepResult:
    status: str  # "ran", "reused" or "exit N"
    seconds: float  # wall clock (for a reused step: when it ran)
    cpu_seconds: float  # user + system of this process and its finished children (synth and loader workers)


def _result_fields(data: object) -> object:
    """``data`` without the fields that do not change a result, at every depth (a curve step nests its command's
    config)."""
    if isinstance(data, dict):
        return {k: _result_fields(v) for k, v in data.items() if k not in NOT_RESULT}
    return data


def fingerprint(config: BaseModel) -> object:
    return _result_fields(config.model_dump(mode="json"))


def _paths(value: object) -> list[Path]:
    """The paths in a (nested) config dump; a string counts too (extract's ``encoder`` names a run folder or a
    registry name: only a folder of an earlier step can match)."""
    if isinstance(value, Path):
        return [value]
    if isinstance(value, str):
        return [Path(value)]
    if isinstance(value, dict):
        return [p for v in value.values() for p in _paths(v)]
    if isinstance(value, list | tuple):
        return [p for v in value for p in _paths(v)]
    return []


def upstream_markers(step: Step, earlier: Sequence[Step]) -> dict[str, str]:
    """sha256 of the markers of the earlier steps whose folders this step reads (a path of its config lies in
    one)."""
    paths = _paths(step.config.model_dump())
    used = {}
    for s in earlier:
        marker = s.out / MARKER
        if marker.is_file() and any(p == s.out or s.out in p.parents for p in paths):
            used[s.name] = sha256_file(marker)
    return used


def step_done(step: Step, upstream: dict[str, str]) -> bool:
    """True when the step's folder holds a marker written for the same configuration and upstream markers."""
    try:
        written = json.loads((step.out / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return written.get("config") == fingerprint(step.config) and written.get("upstream", {}) == upstream


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


T = TypeVar("T")


def timed(function: Callable[[], T]) -> tuple[T, float, float]:
    """(result, wall seconds, CPU seconds) of ``function()`` — CPU time says how long a shared machine took
    apart from waiting for the cores."""
    tick, cpu = time.perf_counter(), _cpu_seconds()
    result = function()
    return result, time.perf_counter() - tick, _cpu_seconds() - cpu


def run_step(step: Step, upstream: dict[str, str] | None = None, *, stop_on_error: bool = True) -> StepResult:
    """Run one step in this process unless its marker says it is done.

    A stage that returns a non-zero exit code (some inputs failed, see its failures.csv) gets no marker, so a
    re-run tries it again; with ``stop_on_error`` that ends the workflow. Log handlers that the stage's
    ``start_run`` attaches are detached afterwards, so each log holds its own lines.
    """
    upstream = upstream or {}
    if step_done(step, upstream):
        written = json.loads((step.out / MARKER).read_text())
        return StepResult("reused", written.get("seconds", 0.0), written.get("cpu_seconds", 0.0))
    with stage_logs():
        code, seconds, cpu = timed(lambda: step.run(step.config))
    if code:
        if stop_on_error:
            raise ClearctError(f"step '{step.name}' ended with exit code {code}; see its log", step.out)
        LOG.warning("%s returned %s", step.name, code)
        return StepResult(f"exit {code}", seconds, cpu)
    atomic_write_text(step.out / MARKER, json.dumps(
        {"step": step.name, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
         "config": fingerprint(step.config), "upstream": upstream}, indent=1))
    return StepResult("ran", seconds, cpu)


def run_steps(steps: Sequence[Step], root: Path, *, done: Sequence[Step] = (), total: int | None = None,
              stop_on_error: bool = True) -> dict[str, StepResult]:
    """Run ``steps`` in order, announcing each (``[i/total] name: description → folder``); ``done`` are steps of
    the same plan that ran before (their markers count as upstream)."""
    results: dict[str, StepResult] = {}
    earlier = list(done)
    total = total or len(done) + len(steps)
    for step in steps:
        where = _relative(step.out, root)
        what = f": {step.description}" if step.description else ""
        print(f"\n[{len(earlier) + 1}/{total}] {step.name}{what} → {where}", flush=True)
        result = run_step(step, upstream_markers(step, earlier), stop_on_error=stop_on_error)
        if result.status == "reused":
            print("  done before, reused", flush=True)
        LOG.info("%s: %s", step.name, result)
        results[step.name] = result
        earlier.append(step)
    return results


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve().parent))
    except ValueError:
        return str(path)
