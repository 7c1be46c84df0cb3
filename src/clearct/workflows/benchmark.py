"""``clearct benchmark``: the paper's encoder comparison (Tables 2–4 and the λ ablation) on synthetic cohorts.

Every step is a clearct command's own Python function called with its config model (synth, pretrain, extract,
crossval, deploy), writing into its own folder under ``OUT``:

```
OUT/cohorts/{train,external,stage}/     clearct synth (train: pretraining + Tasks 1–2; external: Task 2 deploy)
OUT/encoders/<encoder>/                  clearct pretrain (random init needs none); OUT/slice-cache is shared
OUT/features/<encoder>/<cohort>-<win>/   clearct extract, once per encoder and cohort, reused by every task
OUT/tasks/<encoder>/<task>/              clearct crossval / deploy
OUT/curves/<task>/<encoder|finetune3d>/  data-efficiency curves (evaluate.curves.run_curve): share-<s>/ runs,
                                         curve.csv; OUT/volume-cache is the 3D family's shared volume cache
OUT/results/                             tables.md, results.json, lambda.png/svg, curves.csv, curves.png/svg,
                                         report.md/html, steps.json
```

A step that finished writes ``benchmark-step.json`` (its config and the hashes of the markers of the steps whose
output it read) into its folder; a re-run skips steps whose marker holds the same config and upstream hashes and
re-runs (resuming inside the stage) the others — so new fold models are deployed again. The tables and the plot are
rebuilt from the task folders every time (seconds).
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from clearct.common.atomic import atomic_write_text
from clearct.common.errors import ClearctError
from clearct.common.runs import LOG, sha256_file, stage_logs, start_run
from clearct.config import (
    BenchmarkConfig,
    CrossvalConfig,
    DeployConfig,
    ExtractConfig,
    Finetune3dConfig,
    PretrainConfig,
    SynthConfig,
    ValidationConfig,
)
from clearct.synth.labels import LOCATIONS, LUNG_FINDINGS
from clearct.workflows.curves import CurveStep

MARKER = "benchmark-step.json"
# config fields that do not change a step's result (a finished step is not redone when only these differ)
_NOT_RESULT = {"device", "workers", "resume", "overwrite"}
# the lung-abnormality task is the only one DrasCLR (a 3D lung-patch method) is applied to, as in issue 8
TASK_ENCODERS = {"location": "2d", "lung": "all", "stage": "2d"}


# --- the plan: pure functions from the config to the steps ----------------------------------------------------

@dataclass(frozen=True)
class Step:
    name: str  # e.g. "pretrain lecl-3"
    function: str  # "module:function": a command of clearct.config.COMMANDS, or run_curve_step
    config: object  # the command's config model (a CurveStep for a curve)
    out: Path  # the step's folder (holds the marker)


@dataclass(frozen=True)
class Encoder:
    name: str  # random, moco, lecl-<λ>, supervised, drasclr
    method: str | None  # pretrain method; None for random init
    lam: float = 0.0

    @property
    def is_3d(self) -> bool:
        return self.method == "drasclr"


def parse_encoder(name: str) -> Encoder:
    """``random`` | ``moco`` | ``lecl-<λ>`` | ``supervised`` | ``drasclr`` → :class:`Encoder`."""
    if name in ("random", "moco", "supervised", "drasclr"):
        return Encoder(name, None if name == "random" else name)
    m = re.fullmatch(r"lecl-(\d+(?:\.\d+)?)", name)
    if m:
        return Encoder(name, "lecl", float(m.group(1)))
    raise ClearctError(f"unknown benchmark encoder {name!r} (random, moco, lecl-<λ>, supervised, drasclr)")


def _synth_steps(cfg: BenchmarkConfig, root: Path) -> list[Step]:
    common = {"format": "nifti", "size": cfg.image_px, "slices": cfg.slices, "lesion_contrast": cfg.lesion_contrast,
              "lesion_size_mm": list(cfg.lesion_size_mm), "workers": cfg.synth_workers}
    cohorts = {
        # pretraining + Tasks 1–2; chest-abdomen-pelvis so every lesion location can occur
        "train": SynthConfig(out=root / "cohorts" / "train", patients=cfg.patients, seed=cfg.seed,
                             scan_range="cap", **common),
        # Task 2 external validation: new patients (other seed), other scanner (acquisition preset)
        "external": SynthConfig(out=root / "cohorts" / "external", patients=cfg.external_patients,
                                seed=cfg.seed + 1, scan_range="cap", acquisition="external", **common),
        # Task 3: a staging cohort, every patient has a primary lung tumour, half of them high stage
        "stage": SynthConfig(out=root / "cohorts" / "stage", patients=cfg.stage_patients, seed=cfg.seed + 2,
                             scan_range="chest", primary_tumour=1.0, stage_high_share=0.5, **common),
    }
    return [Step(f"synth {k}", "clearct.synth.cohort:run_synth", c, c.out) for k, c in cohorts.items()]


def _pretrain_step(cfg: BenchmarkConfig, enc: Encoder, root: Path) -> Step:
    train = root / "cohorts" / "train"
    out = root / "encoders" / enc.name
    epochs = {"drasclr": cfg.drasclr_epochs, "supervised": cfg.supervised_epochs}.get(enc.method, cfg.epochs)
    common = {"scans": train / "scans.csv", "epochs": epochs,
              "out": out, "resume": True, "device": cfg.device, "seed": cfg.seed, "workers": cfg.loader_workers}
    if enc.is_3d:
        config = PretrainConfig(method="drasclr", batch_size=cfg.drasclr_batch_size,
                                drasclr_patch_size=cfg.drasclr_patch_size, drasclr_voxel_mm=cfg.drasclr_voxel_mm,
                                drasclr_grid_mm=cfg.drasclr_grid_mm, drasclr_channels=cfg.drasclr_channels,
                                drasclr_experts=cfg.drasclr_experts, drasclr_queue=cfg.drasclr_queue, **common)
    else:
        lesion_pairs = enc.method == "lecl"
        config = PretrainConfig(lesions=train / "lesions.csv", arch=cfg.arch, method=enc.method, lam=enc.lam,
                                image_size=cfg.image_size or cfg.image_px, batch_size=cfg.batch_size, lr=cfg.lr,
                                warmup_epochs=cfg.warmup_epochs, mlp_dim=cfg.mlp_dim, proj_dim=cfg.proj_dim,
                                lesion_share=cfg.lesion_share if enc.method != "moco" else None,
                                lesion_crop_scale=cfg.lesion_crop_scale if lesion_pairs else None,
                                cache_dir=root / "slice-cache", log_every=cfg.log_every, **common)
    return Step(f"pretrain {enc.name}", "clearct.pretrain.train:run_pretrain", config, out)


def feature_sets(enc: Encoder, tasks: list[str]) -> dict[str, tuple[str, list[str]]]:
    """The feature sets the encoder's tasks need: {folder name: (cohort, windows)}."""
    wanted: dict[str, tuple[str, list[str]]] = {}
    if "location" in tasks and not enc.is_3d:
        wanted["train-both"] = ("train", ["lung", "abdomen"])  # Task 1 uses both windows
    if "lung" in tasks:
        wanted["train-lung"] = ("train", ["lung"])
        wanted["external-lung"] = ("external", ["lung"])
    if "stage" in tasks and not enc.is_3d:
        wanted["stage-lung"] = ("stage", ["lung"])
    return wanted


def _extract_steps(cfg: BenchmarkConfig, enc: Encoder, root: Path) -> list[Step]:
    source = f"random:{cfg.arch}" if enc.method is None else str(root / "encoders" / enc.name)
    steps = []
    for folder, (cohort, windows) in feature_sets(enc, cfg.tasks).items():
        out = root / "features" / enc.name / folder
        config = ExtractConfig(scans=root / "cohorts" / cohort / "scans.csv", encoder=source, windows=windows,
                               image_size=(cfg.image_size or cfg.image_px) if enc.method is None else None,
                               out=out, batch_size=cfg.extract_batch_size, device=cfg.device,
                               workers=cfg.loader_workers)
        steps.append(Step(f"extract {enc.name} {folder}", "clearct.extract.run:run_extract", config, out))
    return steps


def _task_steps(cfg: BenchmarkConfig, enc: Encoder, root: Path) -> list[Step]:
    feats, cohorts, tasks = root / "features" / enc.name, root / "cohorts", root / "tasks" / enc.name
    mil = {"epochs": cfg.mil_epochs, "lr": cfg.mil_lr, "min_steps": cfg.min_steps, "bootstrap": cfg.bootstrap,
           "seed": cfg.seed, "device": cfg.device}
    steps = []
    if "location" in cfg.tasks and not enc.is_3d:
        c = CrossvalConfig(features=feats / "train-both", labels=cohorts / "train" / "labels.csv",
                           targets=list(LOCATIONS), task="multilabel", folds=cfg.folds, test_frac=cfg.test_frac,
                           out=tasks / "location", **mil)
        steps.append(Step(f"crossval {enc.name} location", "clearct.mil.crossval:run_crossval", c, c.out))
    if "lung" in cfg.tasks:
        c = CrossvalConfig(features=feats / "train-lung", labels=cohorts / "train" / "labels.csv",
                           targets=list(LUNG_FINDINGS), task="multilabel", folds=cfg.folds, out=tasks / "lung", **mil)
        d = DeployConfig(model=c.out, features=feats / "external-lung", labels=cohorts / "external" / "labels.csv",
                         out=tasks / "lung-external", bootstrap=cfg.bootstrap, seed=cfg.seed, device=cfg.device)
        steps += [Step(f"crossval {enc.name} lung", "clearct.mil.crossval:run_crossval", c, c.out),
                  Step(f"deploy {enc.name} lung-external", "clearct.inference.deploy:run_deploy", d, d.out)]
    if "stage" in cfg.tasks and not enc.is_3d:
        c = CrossvalConfig(features=feats / "stage-lung", labels=cohorts / "stage" / "labels.csv",
                           targets=["stage_high"], task="binary", folds=cfg.stage_folds, nested=True,
                           out=tasks / "stage", **mil)
        steps.append(Step(f"crossval {enc.name} stage", "clearct.mil.crossval:run_crossval", c, c.out))
    return steps


def _task_crossval(cfg: BenchmarkConfig, enc: Encoder, root: Path, task: str) -> CrossvalConfig | None:
    """The benchmark's own crossval config of ``task`` for ``enc``; None where the benchmark does not run it (task
    not in ``cfg.tasks``, or DrasCLR outside the lung task)."""
    name = f"crossval {enc.name} {task}"
    return next((s.config for s in _task_steps(cfg, enc, root) if s.name == name), None)


def _curve_runs(cfg: BenchmarkConfig, out: Path) -> dict:
    # one seed, one test_frac and one fold count for every family of a task: run_curve then draws the same
    # held-out patients and the same nested shares for all of them (the lung task has no held-out set of its own)
    return {"folds": cfg.curve_folds, "test_frac": cfg.test_frac, "splits": None, "out": out}


def _finetune3d_curve(cfg: BenchmarkConfig, base: CrossvalConfig, windows: list[str], root: Path,
                      out: Path) -> Finetune3dConfig:
    """The 3D family of a task: the crossval's labels, targets, task type and validation settings, on the volumes
    of the same cohort (``scans.csv`` beside its ``labels.csv``) in the same HU windows as the task's features."""
    shared = {k: getattr(base, k) for k in ValidationConfig.model_fields}
    return Finetune3dConfig(**{**shared, **_curve_runs(cfg, out)}, scans=base.labels.parent / "scans.csv",
                            arch=cfg.finetune3d_arch, width=cfg.finetune3d_width, grid=cfg.finetune3d_grid,
                            epochs=cfg.finetune3d_epochs, batch_size=cfg.finetune3d_batch_size, windows=windows,
                            cache_dir=root / "volume-cache", workers=cfg.loader_workers)


def curve_encoders(cfg: BenchmarkConfig) -> list[Encoder]:
    """The curve encoders the benchmark runs (``curve_encoders`` ∩ ``encoders``, in ``curve_encoders`` order); every
    name is parsed first, so a misspelt one is an error rather than a silently missing curve."""
    wanted = [parse_encoder(e) for e in cfg.curve_encoders]
    return [e for e in wanted if e.name in cfg.encoders]


def _curve_steps(cfg: BenchmarkConfig, root: Path) -> list[Step]:
    """Per curve task: one step per curve encoder (run_curve of crossval on the features the benchmark extracted)
    and, with ``curve_finetune3d``, one for the 3D fine-tune on the volumes."""
    if not cfg.curves:
        return []
    steps = []
    function = "clearct.workflows.curves:run_curve_step"
    for task in cfg.curve_tasks:
        folder = root / "curves" / task
        for enc in curve_encoders(cfg):
            base = _task_crossval(cfg, enc, root, task)
            if base is not None:
                run = base.model_copy(update=_curve_runs(cfg, folder / enc.name))
                step = CurveStep(command="crossval", run=run, out=folder / enc.name, shares=cfg.curve_shares)
                steps.append(Step(f"curve {enc.name} {task}", function, step, step.out))
        # labels, targets and task type do not depend on the encoder; random init stands in for any 2D encoder
        ref = parse_encoder("random")
        base = _task_crossval(cfg, ref, root, task)
        if cfg.curve_finetune3d and base is not None:
            windows = feature_sets(ref, cfg.tasks)[base.features.name][1]
            run = _finetune3d_curve(cfg, base, windows, root, folder / "finetune3d")
            step = CurveStep(command="finetune3d", run=run, out=folder / "finetune3d", shares=cfg.curve_shares)
            steps.append(Step(f"curve finetune3d {task}", function, step, step.out))
    return steps


def plan(cfg: BenchmarkConfig, root: Path) -> list[Step]:
    """Every step of the benchmark in run order (pure: nothing is run or written).

    The cohorts come first, then one encoder after the other (pretrain, extract, tasks) in ``cfg.encoders``
    order, so a run that is stopped early has complete rows for the encoders it reached; the data-efficiency
    curves come last (they read the features of the curve encoders)."""
    steps = _synth_steps(cfg, root)
    for e in map(parse_encoder, cfg.encoders):
        if e.method is not None:
            steps.append(_pretrain_step(cfg, e, root))
        steps += _extract_steps(cfg, e, root) + _task_steps(cfg, e, root)
    return steps + _curve_steps(cfg, root)


def encoder_order(name: str) -> tuple[int, float]:
    """Table row order: random, MoCo, LECL by λ, the supervised ceiling, DrasCLR."""
    e = parse_encoder(name)
    return ({None: 0, "moco": 1, "lecl": 2, "supervised": 3, "drasclr": 4}[e.method], e.lam)


# --- running with per-step resume ----------------------------------------------------------------------------

def _result_fields(data: object) -> object:
    """``data`` without the fields that do not change a result, at every depth (a curve step nests its command's
    config)."""
    if isinstance(data, dict):
        return {k: _result_fields(v) for k, v in data.items() if k not in _NOT_RESULT}
    return data


def _fingerprint(config: object) -> dict:
    return _result_fields(config.model_dump(mode="json"))


def _paths(value: object) -> list[Path]:
    """The paths in a (nested) config dump."""
    if isinstance(value, Path):
        return [value]
    if isinstance(value, dict):
        return [p for v in value.values() for p in _paths(v)]
    if isinstance(value, list | tuple):
        return [p for v in value for p in _paths(v)]
    return []


def upstream_markers(step: Step, earlier: list[Step]) -> dict[str, str]:
    """sha256 of the markers of the earlier steps whose folders this step reads (a path of its config lies in
    one). A marker is rewritten whenever its step runs again, so a re-run upstream step (new features, new fold
    models) makes every step that reads its output run again too."""
    paths = _paths(step.config.model_dump())
    used = {}
    for s in earlier:
        marker = s.out / MARKER
        if marker.is_file() and any(p == s.out or s.out in p.parents for p in paths):
            used[s.name] = sha256_file(marker)
    return used


def step_done(step: Step, upstream: dict[str, str]) -> bool:
    """True when the step's folder holds a marker written for the same configuration and the same upstream
    markers."""
    marker = step.out / MARKER
    if not marker.is_file():
        return False
    try:
        written = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return written.get("config") == _fingerprint(step.config) and written.get("upstream", {}) == upstream


def _resolve(function: str) -> Callable:
    from importlib import import_module

    module, name = function.split(":")
    return getattr(import_module(module), name)


def run_step(step: Step, upstream: dict[str, str] | None = None) -> dict:
    """Run one step in this process unless done; returns {"status": "ran" | "reused", "seconds": …} (for a
    reused step the seconds it took when it ran, from its marker).

    Log handlers that the stage's ``start_run`` attaches are detached afterwards, so each log holds its own lines.
    """
    upstream = upstream or {}
    if step_done(step, upstream):
        return {"status": "reused", "seconds": json.loads((step.out / MARKER).read_text()).get("seconds", 0.0)}
    tick = time.perf_counter()
    with stage_logs():
        code = _resolve(step.function)(step.config)
    seconds = time.perf_counter() - tick
    if code:
        raise ClearctError(f"benchmark step '{step.name}' ended with exit code {code}; see its log", step.out)
    atomic_write_text(step.out / MARKER, json.dumps({"step": step.name, "seconds": round(seconds, 2),
                                                     "config": _fingerprint(step.config), "upstream": upstream},
                                                    indent=1))
    return {"status": "ran", "seconds": round(seconds, 2)}


def run_benchmark(cfg: BenchmarkConfig) -> int:
    """``clearct benchmark``: run (or resume) every step, then write the tables, the λ plot and the report."""
    from clearct.report.benchmark import write_results

    root = Path(cfg.out).resolve()
    start_run(root, "benchmark", cfg)
    steps = plan(cfg, root)
    load_start = os.getloadavg()
    total = time.perf_counter()
    times: dict[str, dict] = {}
    for i, step in enumerate(steps, 1):
        print(f"\n[{i}/{len(steps)}] {step.name} → {step.out.relative_to(root)}", flush=True)
        times[step.name] = run_step(step, upstream_markers(step, steps[: i - 1]))
        LOG.info("benchmark: %s %s", step.name, times[step.name])
        if times[step.name]["status"] == "reused":
            print("  done before, reused", flush=True)
    machine = machine_info(load_start, time.perf_counter() - total)
    (root / "results").mkdir(exist_ok=True)
    atomic_write_text(root / "results" / "steps.json", json.dumps({"steps": times, "machine": machine}, indent=1))
    results = collect(root, sorted(cfg.encoders, key=encoder_order), n_boot=max(cfg.bootstrap, 100), seed=cfg.seed)
    paths = write_results(cfg, root, results, machine, sum(t["seconds"] for t in times.values()),
                          collect_curves(cfg, root, steps))
    ran = sum(t["status"] == "ran" for t in times.values())
    print(f"\nbenchmark: {ran} step(s) ran, {len(steps) - ran} reused, {machine['wall_s']:.0f} s; "
          f"tables in {paths['tables']}, λ plot in {paths['lambda']}")
    return 0


def machine_info(load_start: tuple[float, float, float], wall_s: float) -> dict:
    """CPU model, cores, date, torch version and the load average at start and end (a shared machine is slower)."""
    import torch

    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": model, "cores": os.cpu_count(), "gpu": gpu, "torch": torch.__version__,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "wall_s": round(wall_s, 1),
            "load_start": [round(x, 2) for x in load_start], "load_end": [round(x, 2) for x in os.getloadavg()]}


# --- reading the task results --------------------------------------------------------------------------------

def collect(root: Path, encoders: list[str], *, n_boot: int, seed: int) -> dict[str, dict[str, dict]]:
    """{result set key: {encoder: {target|"macro": {"mean", "sd", "value", "ci_low", "ci_high"}}}}."""
    out: dict[str, dict[str, dict]] = {}
    from clearct.report.benchmark import RESULT_SETS

    for rs in RESULT_SETS:
        per_encoder = {}
        for enc in encoders:
            folder = root / "tasks" / enc / rs.task
            table = auroc_table(folder / "metrics.csv", rs.set_name)
            if not table:
                continue
            sds = {} if rs.folds else bootstrap_sd(folder / "predictions.csv", rs.set_name, n_boot=n_boot, seed=seed)
            cells = {}
            for target, m in table.items():
                mean, sd = (m["fold_mean"], m["fold_sd"]) if rs.folds else (m["value"], sds.get(target, math.nan))
                cells[target] = {"mean": mean, "sd": sd, "value": m["value"], "ci_low": m["ci_low"],
                                 "ci_high": m["ci_high"]}
            if len(rs.targets) == 1:  # one target: its row is also the average
                cells["macro"] = cells[rs.targets[0]]
            per_encoder[enc] = cells
        if per_encoder:
            out[rs.key] = per_encoder
    return out



_CURVE_NUMBERS = ("share", "train_patients", "test_patients", "value", "ci_low", "ci_high", "wall_s", "flops")


def read_curve(step: Step) -> list[dict]:
    """The headline rows (held-out macro AUROC, or the single target's) of a curve step's ``curve.csv``, one per
    share, with the step's task and family; [] before the step has run."""
    from clearct.evaluate.curves import headline

    path = step.out / "curve.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        for k in _CURVE_NUMBERS:
            r[k] = float(r[k]) if r.get(k) not in (None, "") else math.nan
    family = "3D fine-tune" if step.config.command == "finetune3d" else f"CLEAR {step.out.name}"
    return [{"task": step.out.parent.name, "family": family, **r} for r in headline(rows)]


def curve_costs(cfg: BenchmarkConfig, root: Path) -> dict[str, dict]:
    """Per curve task, the cost of one more task (:func:`clearct.evaluate.efficiency.one_more_task`) at the largest
    share: the MIL crossval of the first pretrained curve encoder (else the first) against the 3D fine-tune — the
    same patients and folds — plus that encoder's pretraining and extraction, paid once per cohort."""
    from clearct.evaluate.efficiency import one_more_task

    encoders = sorted(curve_encoders(cfg), key=lambda e: e.method is None)  # stable: pretrained ones first
    share = f"share-{max(cfg.curve_shares):g}"
    out = {}
    for task in cfg.curve_tasks:
        for enc in encoders:
            base = _task_crossval(cfg, enc, root, task)
            mil, ft = root / "curves" / task / enc.name / share, root / "curves" / task / "finetune3d" / share
            if base is None or not (mil / "compute.json").is_file() or not (ft / "compute.json").is_file():
                continue
            pretrain = root / "encoders" / enc.name
            out[task] = {"encoder": enc.name, **one_more_task(
                mil=mil, finetune3d=ft, extract=base.features,
                pretrain=pretrain if (pretrain / "compute.json").is_file() else None)}
            break
    return out


def collect_curves(cfg: BenchmarkConfig, root: Path, steps: list[Step]) -> dict:
    """{"rows": headline rows of every curve step, "compute": {task: cost of one more task}}."""
    rows = [r for s in steps if isinstance(s.config, CurveStep) for r in read_curve(s)]
    return {"rows": rows, "compute": curve_costs(cfg, root) if rows else {}}


def read_metric_rows(path: Path) -> list[dict]:
    """``metrics.csv`` rows with float values (NaN for empty cells); [] when the file does not exist."""
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        for k in ("value", "ci_low", "ci_high", "fold_mean", "fold_sd"):
            r[k] = float(r[k]) if r.get(k) not in (None, "") else math.nan
    return rows


def auroc_table(path: Path, set_name: str) -> dict[str, dict[str, float]]:
    """{target: {value, ci_low, ci_high, fold_mean, fold_sd}} of the AUROC rows of one set of a metrics.csv."""
    return {r["target"]: {k: r[k] for k in ("value", "ci_low", "ci_high", "fold_mean", "fold_sd")}
            for r in read_metric_rows(path) if r["set"] == set_name and r["metric"] == "auroc"}


def bootstrap_sd(predictions: Path, set_name: str, *, n_boot: int, seed: int) -> dict[str, float]:
    """Patient-bootstrap sd of the AUROC per target (and of the macro mean) from a ``predictions.csv``.

    A held-out or external set is predicted by the fold ensemble once, so it has no fold spread; its ± is the
    bootstrap sd instead."""
    from clearct.evaluate.metrics import bootstrap_weights, weighted_auroc

    with open(predictions, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["set"] == set_name]
    if not rows:
        return {}
    scans = sorted({r["scan_id"] for r in rows})
    targets = list(dict.fromkeys(r["target"] for r in rows))
    index = {s: i for i, s in enumerate(scans)}
    y, s = np.full((len(scans), len(targets)), np.nan), np.full((len(scans), len(targets)), np.nan)
    patients = np.empty(len(scans), dtype=object)
    for r in rows:
        i, j = index[r["scan_id"]], targets.index(r["target"])
        y[i, j], s[i, j], patients[i] = float(r["label"]), float(r["probability"]), r["patient_id"]
    w = bootstrap_weights(patients.astype(str), n_boot, seed)
    per = {t: weighted_auroc(y[:, j], s[:, j], w) for j, t in enumerate(targets)}
    with warnings.catch_warnings():  # a class with one label value in the set has no AUROC: NaN, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        out = {t: float(np.nanstd(v)) for t, v in per.items()}
        if len(targets) > 1:
            out["macro"] = float(np.nanstd(np.nanmean(np.stack(list(per.values())), axis=0)))
    return out
