"""The cost of one more task, from the runs' ``compute.json``: CLEAR pays pretraining and extraction once per
cohort and then one MIL cross-validation per task on the existing features; the end-to-end 3D route pays a full
``finetune3d`` per task. Summed totals per stage and the per-task ratio (3D / CLEAR), for a report or a table.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import NamedTuple

from clearct.common.compute import load_compute
from clearct.common.errors import ClearctError

FIELDS = ("wall_s", "cpu_s", "flops", "peak_rss_bytes", "peak_cuda_bytes")


def cost_of(folder: Path, stage: str) -> dict:
    """One stage's totals from ``folder/compute.json`` (fold models reused from an earlier run count with the
    numbers recorded when they were trained)."""
    doc = load_compute(folder)
    if doc is None:
        raise ClearctError("no readable compute.json", folder)
    total = dict(doc["total"])
    for s in doc.get("stages", []):
        if s.get("reused") and s.get("trained"):  # this run did not pay for it; the run that trained it did
            for k in ("wall_s", "cpu_s", "flops"):
                total[k] = (total.get(k) or 0) + (s["trained"].get(k) or 0)
    return {"stage": stage, "folder": str(folder), "device": doc["host"]["device"],
            **{k: total.get(k) for k in FIELDS}}


class TrainingBudget(NamedTuple):
    steps: int
    batch: int
    images_per_s: float  # of the last logged step
    minutes: float  # the training loop: steps × batch / images_per_s


def training_budget(encoder: Path) -> TrainingBudget:
    """The training budget of a pretrained run folder — the x-axis of a learning-vs-budget frontier. The loop
    alone: the slice cache is built once and shared, and a run's wall time on a shared machine says more about the
    neighbours than about the recipe."""
    with open(encoder / "pretrain-log.csv", newline="") as fh:
        last = list(csv.DictReader(fh))[-1]
    batch = json.loads((encoder / "encoder.json").read_text())["info"]["training"]["batch_size"]
    steps, rate = int(last["step"]), float(last["images_per_s"])
    return TrainingBudget(steps, batch, rate, steps * batch / rate / 60)


def one_more_task(*, mil: Path, finetune3d: Path, pretrain: Path | None = None,
                  extract: Path | None = None) -> dict:
    """Rows per stage (``once``: CLEAR's pretraining and extraction; ``per task``: its MIL crossval and the 3D
    fine-tune) and the ratio of the 3D route's per-task cost to CLEAR's."""
    once = [cost_of(p, name) for p, name in ((pretrain, "CLEAR pretrain (once)"), (extract, "CLEAR extract (once)"))
            if p is not None]
    clear = cost_of(mil, "CLEAR: one more task (MIL crossval)")
    ft = cost_of(finetune3d, "3D: one more task (finetune3d)")
    ratio = {k: (ft[k] / clear[k]) if ft.get(k) and clear.get(k) else None for k in ("wall_s", "cpu_s", "flops")}
    return {"rows": [*once, clear, ft], "ratio_3d_over_clear": ratio}


def _num(v: float | None, scale: float = 1.0, fmt: str = "{:.1f}") -> str:
    return "–" if v is None else fmt.format(v / scale)


def cost_table(summary: dict) -> tuple[list[str], list[list[str]], str]:
    """The summary's header, cells (wall and CPU seconds, TFLOPs, peak RSS / CUDA memory in GiB) and the sentence
    with the per-task ratio — the parts of :func:`cost_markdown`, for a report's own table type."""
    header = ["stage", "device", "wall s", "CPU s", "TFLOPs", "peak RSS GiB", "peak CUDA GiB"]
    rows = [[r["stage"], r["device"], _num(r["wall_s"]), _num(r["cpu_s"]), _num(r["flops"], 1e12, "{:.3g}"),
             _num(r["peak_rss_bytes"], 2**30, "{:.2f}"), _num(r["peak_cuda_bytes"], 2**30, "{:.2f}")]
            for r in summary["rows"]]
    q = summary["ratio_3d_over_clear"]
    ratio = (f"One more task, 3D fine-tune / CLEAR MIL: wall {_num(q['wall_s'], fmt='{:.1f}×')}, "
             f"CPU {_num(q['cpu_s'], fmt='{:.1f}×')}, FLOPs {_num(q['flops'], fmt='{:.0f}×')}.")
    return header, rows, ratio


def cost_markdown(summary: dict) -> str:
    """The summary as a markdown table (wall and CPU seconds, TFLOPs, peak RSS / CUDA memory in GiB)."""
    header, rows, ratio = cost_table(summary)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + f"\n\n{ratio}\n"
