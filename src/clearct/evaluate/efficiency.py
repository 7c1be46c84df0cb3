"""The cost of one more task, from the runs' ``compute.json``: CLEAR pays pretraining and extraction once per
cohort and then one MIL cross-validation per task on the existing features; the end-to-end 3D route pays a full
``finetune3d`` per task. Summed totals per stage and the per-task ratio (3D / CLEAR), for a report or a table.
"""

from __future__ import annotations

from pathlib import Path

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


def cost_markdown(summary: dict) -> str:
    """The summary as a markdown table (wall and CPU seconds, TFLOPs, peak RSS / CUDA memory in GiB)."""
    def num(v: float | None, scale: float = 1.0, fmt: str = "{:.1f}") -> str:
        return "–" if v is None else fmt.format(v / scale)

    lines = ["| stage | device | wall s | CPU s | TFLOPs | peak RSS GiB | peak CUDA GiB |",
             "|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        lines.append(f"| {r['stage']} | {r['device']} | {num(r['wall_s'])} | {num(r['cpu_s'])} | "
                     f"{num(r['flops'], 1e12, '{:.3g}')} | {num(r['peak_rss_bytes'], 2**30, '{:.2f}')} | "
                     f"{num(r['peak_cuda_bytes'], 2**30, '{:.2f}')} |")
    q = summary["ratio_3d_over_clear"]
    lines.append(f"\nOne more task, 3D fine-tune / CLEAR MIL: wall {num(q['wall_s'], fmt='{:.1f}×')}, "
                 f"CPU {num(q['cpu_s'], fmt='{:.1f}×')}, FLOPs {num(q['flops'], fmt='{:.0f}×')}.")
    return "\n".join(lines) + "\n"
