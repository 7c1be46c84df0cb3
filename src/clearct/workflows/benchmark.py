"""``clearct benchmark``: the paper's encoder comparison (Tables 2–4 and the λ ablation) on synthetic cohorts.

Every step is a clearct command's own Python function called with its config model (synth, pretrain, extract,
crossval, deploy), writing into its own folder under ``OUT``, run by :mod:`clearct.workflows.runner` (a re-run
resumes):

```
OUT/cohorts/{train,external,stage}/     clearct synth (train: pretraining + Tasks 1–2; external: Task 2 deploy)
OUT/encoders/<encoder>/                  clearct pretrain (random init needs none); OUT/slice-cache is shared
OUT/features/<encoder>/<cohort>-<win>/   clearct extract, once per encoder and cohort, reused by every task
                                         (Task 2 reads the lung rows of Task 1's train-both)
OUT/tasks/<encoder>/<task>/              clearct crossval / deploy
OUT/curves/<task>/<encoder|finetune3d>/  data-efficiency curves (clearct.workflows.curves.run_curve): share-<s>/
                                         runs, curve.csv; OUT/volume-cache is the 3D family's shared volume cache
OUT/results/                             tables.md, results.json, lambda.png/svg, curves.csv, curves.png/svg,
                                         report.md/html, steps.json
```

The tables and the plot are rebuilt from the task folders every time (seconds).
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from clearct.common.atomic import atomic_write_text
from clearct.common.errors import ClearctError
from clearct.common.runs import LOG, start_run
from clearct.config import (
    BenchmarkConfig,
    CrossvalConfig,
    CrossvalSettings,
    DeployConfig,
    ExtractConfig,
    ExtractSettings,
    Finetune3dConfig,
    Finetune3dSettings,
    PretrainConfig,
    PretrainSettings,
    SynthConfig,
    SynthSettings,
    resolve,
)
from clearct.evaluate.curves import headline
from clearct.evaluate.efficiency import one_more_task
from clearct.extract.run import run_extract
from clearct.inference.deploy import run_deploy
from clearct.mil.crossval import run_crossval
from clearct.pretrain.train import LOG_CSV, run_pretrain, snapshot_dir
from clearct.report.benchmark import write_results
from clearct.synth.cohort import run_synth
from clearct.synth.labels import LOCATIONS, LUNG_FINDINGS
from clearct.workflows.benchmark_results import collect, collect_paired, collect_steps
from clearct.workflows.curves import CurveStep, run_curve_step
from clearct.workflows.runner import Step, run_steps

# the lung-abnormality task is the only one DrasCLR (a 3D lung-patch method) is applied to
TASK_ENCODERS = {"location": "2d", "lung": "all", "stage": "2d"}

# The benchmark's settings for the section fields the user leaves empty (the 2-CPU-core size of ≥ 1,000 labelled
# scans: benchmarks/RESULTS.md "benchmark"); everything else is the commands' own default.
PRESET: dict[str, dict] = {
    # the recipe's cohort (RESULTS.md "recipe"); at lesion contrast 1.0 / 10–50 mm every encoder was at chance
    "synth": {"format": "nifti", "size": 128, "slices": 32, "lesion_contrast": 4.0, "lesion_size_mm": [30.0, 80.0],
              "workers": 2},
    # every 2D encoder: the same architecture, input size and budget — one epoch over the training cohort's slices
    # (the supervised ceiling: supervised_epochs over its lesion-target slices); the warm-up spans the epoch.
    # DrasCLR at the sizes of a few CPU minutes
    "pretrain": {"arch": "resnet_tiny", "image_size": 96, "epochs": 1, "batch_size": 64, "lr": 4e-3,
                 "warmup_epochs": 1.0, "lesion_share": 0.5, "lesion_crop_scale": [2.0, 4.0], "mlp_dim": 512,
                 "proj_dim": 128, "workers": 1,
                 "drasclr": {"patch_size": 16, "voxel_mm": 4.0, "grid_mm": 60.0, "channels": [8, 16, 32],
                             "experts": 4, "queue": 256}},
    "extract": {"workers": 1},
    # ABMIL: lr 1e-3 (the paper's 1e-4 needs ≈ 2,000 steps per model; docs/mil.md), the step floor at 200;
    # test_frac: the lesion-location task's held-out test set (and the curves')
    "crossval": {"epochs": 32, "lr": 1e-3, "min_steps": 200, "bootstrap": 1000, "test_frac": 0.2},
    # the curves' 3D family at finetune3d's CPU sizes; its cost grows with the labelled scans of every share and
    # fold, so at ≥ 1,000 scans it gets 2 epochs (the most a 2-hour run holds; RESULTS.md "benchmark")
    "finetune3d": {"arch": "resnet10", "width": 0.5, "grid": [32, 64, 64], "epochs": 2, "batch_size": 4,
                   "workers": 1},
}


@dataclass(frozen=True)
class BenchmarkPlan:
    """A benchmark config with its preset applied: every setting of every stage."""

    cfg: BenchmarkConfig
    synth: SynthSettings
    pretrain: PretrainSettings  # every 2D encoder's; method, λ and epochs come from the encoder's name
    extract: ExtractSettings
    crossval: CrossvalSettings
    finetune3d: Finetune3dSettings

    @property
    def image_size(self) -> int:
        """The 2D encoders' input size: pretrain's, else the synth size."""
        return self.pretrain.image_size or self.synth.size


def resolve_plan(cfg: BenchmarkConfig) -> BenchmarkPlan:
    """The user's section values, then :data:`PRESET`, then the commands' defaults."""
    return BenchmarkPlan(cfg, **{name: resolve(model, PRESET[name], getattr(cfg, name)) for name, model in (
        ("synth", SynthSettings), ("pretrain", PretrainSettings), ("extract", ExtractSettings),
        ("crossval", CrossvalSettings), ("finetune3d", Finetune3dSettings))})


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


def _synth_steps(plan: BenchmarkPlan, root: Path) -> list[Step]:
    cfg, synth = plan.cfg, plan.synth.model_dump()
    cohorts = {
        # pretraining + Tasks 1–2; chest-abdomen-pelvis so every lesion location can occur
        "train": SynthConfig(**{**synth, "scan_range": "cap"}, out=root / "cohorts" / "train", patients=cfg.patients,
                             seed=cfg.seed),
        # Task 2 external validation: new patients (other seed), other scanner (acquisition preset)
        "external": SynthConfig(**{**synth, "scan_range": "cap", "acquisition": "external"},
                                out=root / "cohorts" / "external", patients=cfg.external_patients, seed=cfg.seed + 1),
        # Task 3: a staging cohort, every patient has a primary lung tumour, half of them high stage
        "stage": SynthConfig(**{**synth, "scan_range": "chest", "primary_tumour": 1.0, "stage_high_share": 0.5},
                             out=root / "cohorts" / "stage", patients=cfg.stage_patients, seed=cfg.seed + 2),
    }
    return [Step(f"synth {k}", run_synth, c, c.out) for k, c in cohorts.items()]


def _pretrain_step(plan: BenchmarkPlan, enc: Encoder, root: Path) -> Step:
    cfg, train, out = plan.cfg, root / "cohorts" / "train", root / "encoders" / enc.name
    io = {"scans": train / "scans.csv", "out": out, "resume": True, "device": cfg.device, "seed": cfg.seed,
          "snapshot_steps": cfg.step_snapshots if enc in step_encoders(cfg) else []}
    settings = plan.pretrain.model_dump()
    if enc.is_3d:  # batch size: DrasCLR's own preset
        config = PretrainConfig(**{**settings, "method": "drasclr", "epochs": cfg.drasclr_epochs, "batch_size": None},
                                **io)
    else:
        epochs = cfg.supervised_epochs if enc.method == "supervised" else plan.pretrain.epochs
        config = PretrainConfig(**{**settings, "method": enc.method, "lam": enc.lam, "epochs": epochs,
                                   "image_size": plan.image_size,
                                   "lesion_share": plan.pretrain.lesion_share if enc.method != "moco" else None,
                                   "lesion_crop_scale": plan.pretrain.lesion_crop_scale if enc.method == "lecl"
                                   else None},
                                lesions=train / "lesions.csv", cache_dir=root / "slice-cache", **io)
    return Step(f"pretrain {enc.name}", run_pretrain, config, out)


def feature_sets(enc: Encoder, tasks: list[str]) -> dict[str, tuple[str, list[str]]]:
    """The feature sets the encoder's tasks need: {folder name: (cohort, windows)}."""
    wanted: dict[str, tuple[str, list[str]]] = {}
    if "location" in tasks and not enc.is_3d:
        wanted["train-both"] = ("train", ["lung", "abdomen"])  # Task 1 uses both windows
    if "lung" in tasks:
        if "train-both" not in wanted:  # else Task 2 reads the lung rows of Task 1's features: no second extraction
            wanted["train-lung"] = ("train", ["lung"])
        wanted["external-lung"] = ("external", ["lung"])
    if "stage" in tasks and not enc.is_3d:
        wanted["stage-lung"] = ("stage", ["lung"])
    return wanted


def _extract_config(plan: BenchmarkPlan, source: str, cohort: Path, windows: list[str], out: Path, *,
                    random_init: bool) -> ExtractConfig:
    """Extraction of ``cohort`` with encoder ``source`` (random init at the 2D encoders' size; a run folder at its
    own training size)."""
    # overwrite: the runner re-runs extraction only when the encoder changed (its features must follow)
    return ExtractConfig(**{**plan.extract.model_dump(), "windows": windows, "overwrite": True,
                            "image_size": plan.image_size if random_init else plan.extract.image_size},
                         scans=cohort / "scans.csv", encoder=source, out=out, device=plan.cfg.device)


def _extract_steps(plan: BenchmarkPlan, enc: Encoder, root: Path) -> list[Step]:
    source = f"random:{plan.pretrain.arch}" if enc.method is None else str(root / "encoders" / enc.name)
    steps = []
    for folder, (cohort, windows) in feature_sets(enc, plan.cfg.tasks).items():
        config = _extract_config(plan, source, root / "cohorts" / cohort, windows, root / "features" / enc.name / folder,
                                 random_init=enc.method is None)
        steps.append(Step(f"extract {enc.name} {folder}", run_extract, config, config.out))
    return steps


def _task_steps(plan: BenchmarkPlan, enc: Encoder, root: Path) -> list[Step]:
    cfg = plan.cfg
    feats, cohorts, tasks = root / "features" / enc.name, root / "cohorts", root / "tasks" / enc.name
    mil = {**plan.crossval.model_dump(), "seed": cfg.seed, "device": cfg.device}
    steps = []
    if "location" in cfg.tasks and not enc.is_3d:
        c = CrossvalConfig(**{**mil, "task": "multilabel"}, features=feats / "train-both",
                           labels=cohorts / "train" / "labels.csv", targets=list(LOCATIONS), out=tasks / "location")
        steps.append(Step(f"crossval {enc.name} location", run_crossval, c, c.out))
    if "lung" in cfg.tasks:  # validated on the external cohort instead of a held-out share
        train = next(f for f in feature_sets(enc, cfg.tasks) if f.startswith("train-"))
        c = CrossvalConfig(**{**mil, "task": "multilabel", "test_frac": 0.0, "use_windows": ["lung"]},
                           features=feats / train, labels=cohorts / "train" / "labels.csv",
                           targets=list(LUNG_FINDINGS), out=tasks / "lung")
        d = DeployConfig(model=c.out, features=feats / "external-lung", labels=cohorts / "external" / "labels.csv",
                         out=tasks / "lung-external", bootstrap=plan.crossval.bootstrap, seed=cfg.seed,
                         device=cfg.device)
        steps += [Step(f"crossval {enc.name} lung", run_crossval, c, c.out),
                  Step(f"deploy {enc.name} lung-external", run_deploy, d, d.out)]
    if "stage" in cfg.tasks and not enc.is_3d:
        c = CrossvalConfig(**{**mil, "task": "binary", "folds": cfg.stage_folds, "nested": True, "test_frac": 0.0},
                           features=feats / "stage-lung", labels=cohorts / "stage" / "labels.csv",
                           targets=["stage_high"], out=tasks / "stage")
        steps.append(Step(f"crossval {enc.name} stage", run_crossval, c, c.out))
    return steps


def _task_crossval(plan: BenchmarkPlan, enc: Encoder, root: Path, task: str) -> CrossvalConfig | None:
    """The benchmark's own crossval config of ``task`` for ``enc``; None where the benchmark does not run it (task
    not in ``tasks``, or DrasCLR outside the lung task)."""
    name = f"crossval {enc.name} {task}"
    found = next((s.config for s in _task_steps(plan, enc, root) if s.name == name), None)
    return found if isinstance(found, CrossvalConfig) else None


def _curve_runs(plan: BenchmarkPlan, out: Path) -> dict:
    # one seed, one test_frac and one fold count for every family of a task: run_curve then draws the same
    # held-out patients and the same nested shares for all of them (the lung task has no held-out set of its own)
    return {"folds": plan.cfg.curve_folds, "test_frac": plan.crossval.test_frac, "splits": None, "out": out}


def _finetune3d_curve(plan: BenchmarkPlan, base: CrossvalConfig, windows: list[str], root: Path,
                      out: Path) -> Finetune3dConfig:
    """The 3D family of a task: the crossval's labels, targets, task type and validation settings, on the volumes
    of the same cohort (``scans.csv`` beside its ``labels.csv``) in the same HU windows as the task's features."""
    validation = base.model_dump(include={"labels", "targets", "task", "nested", "val_frac", "split_column",
                                          "bootstrap", "resume", "seed", "device"})
    return Finetune3dConfig(**{**plan.finetune3d.model_dump(), **validation, **_curve_runs(plan, out),
                               "windows": windows}, scans=base.labels.parent / "scans.csv",
                            cache_dir=root / "volume-cache")


def curve_encoders(cfg: BenchmarkConfig) -> list[Encoder]:
    """The curve encoders the benchmark runs (``curve_encoders`` ∩ ``encoders``, in ``curve_encoders`` order); every
    name is parsed first, so a misspelt one is an error rather than a silently missing curve."""
    wanted = [parse_encoder(e) for e in cfg.curve_encoders]
    return [e for e in wanted if e.name in cfg.encoders]


def _curve_steps(plan: BenchmarkPlan, root: Path) -> list[Step]:
    """Per curve task: one step per curve encoder (run_curve of crossval on the features the benchmark extracted)
    and, with ``curve_finetune3d``, one for the 3D fine-tune on the volumes."""
    cfg = plan.cfg
    if not cfg.curves:
        return []
    steps = []
    for task in cfg.curve_tasks:
        folder = root / "curves" / task
        for enc in curve_encoders(cfg):
            base = _task_crossval(plan, enc, root, task)
            if base is not None:
                run = base.model_copy(update=_curve_runs(plan, folder / enc.name))
                step = CurveStep(command="crossval", run=run, out=folder / enc.name, shares=cfg.curve_shares)
                steps.append(Step(f"curve {enc.name} {task}", run_curve_step, step, step.out))
        # labels, targets and task type do not depend on the encoder; random init stands in for any 2D encoder
        ref = parse_encoder("random")
        base = _task_crossval(plan, ref, root, task)
        if cfg.curve_finetune3d and base is not None:
            windows = base.use_windows or feature_sets(ref, cfg.tasks)[base.features.name][1]
            run3d = _finetune3d_curve(plan, base, windows, root, folder / "finetune3d")
            step = CurveStep(command="finetune3d", run=run3d, out=folder / "finetune3d", shares=cfg.curve_shares)
            steps.append(Step(f"curve finetune3d {task}", run_curve_step, step, step.out))
    return steps


def step_encoders(cfg: BenchmarkConfig) -> list[Encoder]:
    """The encoders with a pretraining-steps axis: ``step_encoders`` ∩ ``encoders`` that a 2D pretraining run
    makes (random init has no steps, DrasCLR no snapshots), in ``step_encoders`` order; none without
    ``step_snapshots`` or without the location task."""
    wanted = [parse_encoder(e) for e in cfg.step_encoders]
    if not cfg.step_snapshots or "location" not in cfg.tasks:
        return []
    return [e for e in wanted if e.name in cfg.encoders and e.method is not None and not e.is_3d]


def step_folder(root: Path, encoder: str, step: int) -> Path:
    """``OUT/steps/<encoder>/step-<n>/``: the snapshot's features (``features/``) and its location task
    (``location/``)."""
    return root / "steps" / encoder / f"step-{step}"


def _steps_axis(plan: BenchmarkPlan, root: Path) -> list[Step]:
    """Per step encoder and snapshot: extract the training cohort in Task 1's windows with the snapshot, then
    Task 1's own crossval on those features (same folds, held-out patients and settings as the encoder's row)."""
    steps = []
    for enc in step_encoders(plan.cfg):
        base = _task_crossval(plan, enc, root, "location")
        assert base is not None, "step_encoders keeps 2D encoders with the location task"
        cohort, windows = feature_sets(enc, plan.cfg.tasks)["train-both"]
        for n in plan.cfg.step_snapshots:
            folder = step_folder(root, enc.name, n)
            ex = _extract_config(plan, str(snapshot_dir(root / "encoders" / enc.name, n)), root / "cohorts" / cohort,
                                 windows, folder / "features", random_init=False)
            cv = base.model_copy(update={"features": ex.out, "out": folder / "location"})
            steps += [Step(f"extract {enc.name} step-{n}", run_extract, ex, ex.out),
                      Step(f"crossval {enc.name} step-{n} location", run_crossval, cv, cv.out)]
    return steps


def plan_steps(plan: BenchmarkPlan, root: Path) -> list[Step]:
    """Every step of the benchmark in run order (pure: nothing is run or written).

    The cohorts come first, then one encoder after the other (pretrain, extract, tasks) in ``encoders`` order, so
    a run that is stopped early has complete rows for the encoders it reached; then the pretraining-steps axis
    (it reads the snapshots the step encoders' pretraining wrote) and last the data-efficiency curves (they read
    the features of the curve encoders; the 3D family is the most expensive part)."""
    steps = _synth_steps(plan, root)
    for e in map(parse_encoder, plan.cfg.encoders):
        if e.method is not None:
            steps.append(_pretrain_step(plan, e, root))
        steps += _extract_steps(plan, e, root) + _task_steps(plan, e, root)
    return steps + _steps_axis(plan, root) + _curve_steps(plan, root)


def encoder_order(name: str) -> tuple[int, float]:
    """Table row order: random, MoCo, LECL by λ, the supervised ceiling, DrasCLR."""
    e = parse_encoder(name)
    return ({None: 0, "moco": 1, "lecl": 2, "supervised": 3, "drasclr": 4}[e.method], e.lam)


def run_benchmark(cfg: BenchmarkConfig) -> int:
    """``clearct benchmark``: run (or resume) every step, then write the tables, the λ plot and the report."""
    root = Path(cfg.out).resolve()
    plan = resolve_plan(cfg)
    start_run(root, "benchmark", cfg)
    steps = plan_steps(plan, root)
    load_start = os.getloadavg()
    total = time.perf_counter()
    results = run_steps(steps, root)
    times: dict[str, dict[str, Any]] = {
        k: {"status": v.status, "seconds": round(v.seconds, 2), "cpu_seconds": round(v.cpu_seconds, 2)}
        for k, v in results.items()}
    machine = machine_info(load_start, time.perf_counter() - total)
    (root / "results").mkdir(exist_ok=True)
    atomic_write_text(root / "results" / "steps.json", json.dumps({"steps": times, "machine": machine}, indent=1))
    n_boot = max(plan.crossval.bootstrap, 100)
    aurocs = collect(root, sorted(cfg.encoders, key=encoder_order), n_boot=n_boot, seed=cfg.seed)
    paths = write_results(
        plan, root, aurocs, machine, times, paired=collect_paired(root, aurocs, n_boot=n_boot, seed=cfg.seed),
        steps=collect_steps(step_points(plan, root), random_reference(plan, root), n_boot=n_boot, seed=cfg.seed),
        curves=collect_curves(plan, root, steps))
    ran = sum(t["status"] == "ran" for t in times.values())
    LOG.info("benchmark: %d step(s) ran, %d reused", ran, len(steps) - ran)
    print(f"\nbenchmark: {ran} step(s) ran, {len(steps) - ran} reused, {machine['wall_s']:.0f} s; "
          f"tables in {paths['tables']}, λ plot in {paths['lambda']}")
    return 0


def random_reference(plan: BenchmarkPlan, root: Path) -> Path | None:
    """The random-init lesion-location task folder: step 0 of every steps axis, and what each point is paired
    with (pretraining starts from the same initialisation as ``random:<arch>`` at seed 0)."""
    return root / "tasks" / "random" / "location" if "random" in plan.cfg.encoders else None


def final_steps(run: Path) -> int | None:
    """The optimizer steps a finished pretraining run took (the last row of its pretrain-log.csv)."""
    path = run / LOG_CSV
    if not path.is_file():
        return None
    with open(path, newline="") as fh:
        steps = [int(r["step"]) for r in csv.DictReader(fh)]
    return max(steps) if steps else None


def step_points(plan: BenchmarkPlan, root: Path) -> dict[str, list[tuple[int, Path]]]:
    """Per step encoder: (pretraining steps, lesion-location task folder) from random init (0) over the snapshots
    to the finished encoder's own row."""
    points = {}
    reference = random_reference(plan, root)
    for enc in step_encoders(plan.cfg):
        at = [(0, reference)] if reference is not None else []
        at += [(n, step_folder(root, enc.name, n) / "location") for n in plan.cfg.step_snapshots]
        last = final_steps(root / "encoders" / enc.name)
        if last is not None:
            at.append((last, root / "tasks" / enc.name / "location"))
        points[enc.name] = at
    return points


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

_CURVE_NUMBERS = ("share", "train_patients", "test_patients", "value", "ci_low", "ci_high", "wall_s", "flops")


def read_curve(step: Step) -> list[dict]:
    """The headline rows (held-out macro AUROC, or the single target's) of a curve step's ``curve.csv``, one per
    share, with the step's task and family; [] before the step has run."""
    path = step.out / "curve.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        for k in _CURVE_NUMBERS:
            r[k] = float(r[k]) if r.get(k) not in (None, "") else math.nan
    assert isinstance(step.config, CurveStep)
    family = "3D fine-tune" if step.config.command == "finetune3d" else f"CLEAR {step.out.name}"
    return [{"task": step.out.parent.name, "family": family, **r} for r in headline(rows)]


def curve_costs(plan: BenchmarkPlan, root: Path) -> dict[str, dict]:
    """Per curve task, the cost of one more task (:func:`clearct.evaluate.efficiency.one_more_task`) at the largest
    share: the MIL crossval of the first pretrained curve encoder (else the first) against the 3D fine-tune — the
    same patients and folds — plus that encoder's pretraining and extraction, paid once per cohort."""
    cfg = plan.cfg
    encoders = sorted(curve_encoders(cfg), key=lambda e: e.method is None)  # stable: pretrained ones first
    share = f"share-{max(cfg.curve_shares):g}"
    out = {}
    for task in cfg.curve_tasks:
        for enc in encoders:
            base = _task_crossval(plan, enc, root, task)
            mil, ft = root / "curves" / task / enc.name / share, root / "curves" / task / "finetune3d" / share
            if base is None or not (mil / "compute.json").is_file() or not (ft / "compute.json").is_file():
                continue
            pretrain = root / "encoders" / enc.name
            out[task] = {"encoder": enc.name, **one_more_task(
                mil=mil, finetune3d=ft, extract=base.features,
                pretrain=pretrain if (pretrain / "compute.json").is_file() else None)}
            break
    return out


def collect_curves(plan: BenchmarkPlan, root: Path, steps: list[Step]) -> dict:
    """{"rows": headline rows of every curve step, "compute": {task: cost of one more task}}."""
    rows = [r for s in steps if isinstance(s.config, CurveStep) for r in read_curve(s)]
    return {"rows": rows, "compute": curve_costs(plan, root) if rows else {}}
