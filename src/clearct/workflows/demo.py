"""``clearct demo``: the whole pipeline on synthetic cohorts, ending in ``DIR/report.html`` and ``DIR/report.md``.

Every stage is the command's own Python function called with its config model (the same code as
``clearct synth`` … ``clearct predict``), each writing into its own subfolder of ``DIR``. Re-running into the
same folder resumes: synth reuses finished scans, a pretraining is skipped when ``encoders/<arm>/encoder.json``
holds a run with the same settings on the same cohort tables (``demo-inputs.json``; otherwise it continues from
its checkpoint), extraction skips feature files made with the same encoder weights, crossval reloads fold models
with the same settings; deploy, attention, predict, the figures and the report are always redone (seconds).

Arms (rows of the report): the LECL encoder, the same architecture at random init, the supervised ceiling (the same
architecture trained on per-slice lesion labels), and the positive control (the LECL features with the key slices
marked). Tasks: lesion location (both windows) and lung abnormalities (lung window), each cross-validated on the
training cohort and deployed on the external one.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from clearct.common.atomic import atomic_write_text
from clearct.common.runs import LOG, sha256_file, stage_logs, start_run
from clearct.config import (
    AttentionConfig,
    CrossvalConfig,
    DemoConfig,
    DeployConfig,
    ExtractConfig,
    PredictConfig,
    PretrainConfig,
    SynthConfig,
)
from clearct.mil.planted import LesionMarks
from clearct.synth.labels import LOCATIONS, LUNG_FINDINGS

ATTENTION_FIGURES = 3  # external scans drawn by the attention stage (figures for the report)
TARGETS = list(LOCATIONS)


ARMS = ("lecl", "random", "supervised")  # the encoders compared (rows of the report's tables), plus the control
ARM_TITLES = {"lecl": "LECL", "random": "random init (same architecture)", "supervised": "supervised ceiling",
              "control": "positive control (key slices marked)"}


@dataclass(frozen=True)
class DemoSize:
    """Everything that scales with ``--size``."""

    patients: int  # training cohort (pretraining and cross-validation)
    external_patients: int  # second cohort, other seed and the external acquisition preset
    image_px: int  # synth in-plane size
    encoder_px: int  # the encoders' input size (a CNN pretrains and embeds at any size; smaller is faster)
    slices: int  # synth slices per scan
    arch: str  # encoder architecture of every arm
    epochs: int  # LECL pretraining epochs
    batch_size: int  # pretraining batch
    lr: float  # pretraining base lr (per 256 images)
    lam: float  # LECL λ
    lesion_share: float | None  # share of each pretraining epoch drawn from annotated slices
    lesion_crop_scale: tuple[float, float] | None  # LECL lesion crop side / lesion box side
    mlp_dim: int  # MoCo projector / predictor hidden size
    proj_dim: int
    supervised_epochs: int  # the supervised ceiling's epochs (same architecture, batch and schedule)
    folds: int
    mil_epochs: int
    mil_lr: float  # ABMIL AdamW lr (the paper's 1e-4 needs ~2000 steps; the CPU demo takes fewer, larger ones)
    min_steps: int
    bootstrap: int
    lesion_contrast: float  # synth knobs (see docs/getting-started.md for why the demo's lesions are larger)
    lesion_size_mm: tuple[float, float]
    workers: int  # data-loader / read-ahead workers


SIZES: dict[str, DemoSize] = {
    # a few seconds per stage: for tests
    "test": DemoSize(patients=12, external_patients=6, image_px=64, encoder_px=64, slices=16, arch="resnet_tiny",
                     epochs=1, batch_size=32, lr=2e-3, lam=1.0, lesion_share=0.5, lesion_crop_scale=(2.0, 4.0),
                     mlp_dim=64, proj_dim=32, supervised_epochs=1, folds=2, mil_epochs=2, mil_lr=1e-3, min_steps=20,
                     bootstrap=50, lesion_contrast=2.0, lesion_size_mm=(20.0, 60.0), workers=0),
    # the default: the CPU recipe of docs/pretraining.md, ≤ 10 min on 2 CPU cores with setup (benchmarks/RESULTS.md)
    # (encoders at 96 px on 128-px slices: 1.9× the 128-px training rate, the pretraining half of the demo's time)
    "small": DemoSize(patients=200, external_patients=60, image_px=128, encoder_px=96, slices=32, arch="resnet_tiny",
                      epochs=2, batch_size=64, lr=4e-3, lam=1.0, lesion_share=0.5, lesion_crop_scale=(2.0, 4.0),
                      mlp_dim=512, proj_dim=128, supervised_epochs=4, folds=5, mil_epochs=32, mil_lr=1e-3, min_steps=200,
                      bootstrap=500, lesion_contrast=4.0, lesion_size_mm=(30.0, 80.0), workers=1),
    # a GPU run: the paper's encoder and image size, a DeepLesion-sized slice count per epoch is still far away
    "full": DemoSize(patients=1000, external_patients=300, image_px=512, encoder_px=224, slices=64,
                     arch="vit_conv_base", epochs=30, batch_size=256, lr=1.5e-4, lam=1.0, lesion_share=None,
                     lesion_crop_scale=None, mlp_dim=4096, proj_dim=256, supervised_epochs=10, folds=5, mil_epochs=32, mil_lr=1e-4,
                     min_steps=2000, bootstrap=1000, lesion_contrast=1.0, lesion_size_mm=(10.0, 50.0), workers=8),
}


def resolve_size(cfg: DemoConfig) -> DemoSize:
    """The ``--size`` preset with the explicit overrides of ``cfg`` applied."""
    size = SIZES[cfg.size]
    overrides = {k: getattr(cfg, k) for k in ("patients", "external_patients", "epochs", "mil_epochs")
                 if getattr(cfg, k) is not None}
    return replace(size, **overrides)


@dataclass(frozen=True)
class Stage:
    name: str
    function: str  # "module:function" as in clearct.config.COMMANDS
    config: object
    description: str


@dataclass(frozen=True)
class Layout:
    """Where each stage writes under the demo folder."""

    root: Path

    @property
    def cohort(self) -> Path:
        return self.root / "cohort"

    @property
    def external(self) -> Path:
        return self.root / "external"

    def encoder(self, arm: str) -> Path:
        return self.root / "encoders" / arm

    def features(self, arm: str, cohort: str) -> Path:
        return self.root / "features" / arm / cohort

    def task(self, task: str, arm: str) -> Path:
        return self.root / task / arm


def encoder_spec(arm: str, size: DemoSize, layout: Layout) -> str:
    """What ``extract --encoder`` gets for an arm: a run folder, or the random-init registry entry."""
    return f"random:{size.arch}" if arm == "random" else str(layout.encoder(arm))


def demo_stages(cfg: DemoConfig, size: DemoSize, root: Path, predict_scan: Path | None = None) -> list[Stage]:
    """The stage configs of a demo run into ``root`` (pure: nothing is run or written).

    ``predict_scan`` is the scan given to predict (chosen after synth); without it the predict stage is left out.
    """
    at = Layout(root)
    synth = {"patients": size.patients, "seed": cfg.seed, "format": "dicom", "size": size.image_px,
             "slices": size.slices, "scan_range": "cap", "lesion_contrast": size.lesion_contrast,
             "lesion_size_mm": list(size.lesion_size_mm), "workers": 2}
    common = {"device": cfg.device}
    pretrain = {"scans": at.cohort / "scans.csv", "lesions": at.cohort / "lesions.csv", "arch": size.arch,
                "image_size": size.encoder_px, "batch_size": size.batch_size, "lr": size.lr,
                "lesion_share": size.lesion_share, "resume": True, "seed": cfg.seed, "workers": size.workers,
                "log_every": 5, "cache_dir": root / "slice-cache", **common}
    mil = {"folds": size.folds, "epochs": size.mil_epochs, "lr": size.mil_lr, "min_steps": size.min_steps,
           "bootstrap": size.bootstrap, "seed": cfg.seed, **common}
    location = {"labels": at.cohort / "labels.csv", "targets": TARGETS, "task": "multilabel", **mil}
    lung = {"labels": at.cohort / "labels.csv", "targets": list(LUNG_FINDINGS), "task": "multilabel",
            "windows": ["lung"], **mil}

    stages = [
        Stage("synth", "clearct.synth.cohort:run_synth", SynthConfig(out=at.cohort, **synth),
              "training cohort (DICOM)"),
        # another seed → other patients; the external preset → another scanner; every lesion annotated so the
        # attention figures and the localisation share can use all lesions
        Stage("synth-external", "clearct.synth.cohort:run_synth",
              SynthConfig(out=at.external, **{**synth, "patients": size.external_patients, "seed": cfg.seed + 1},
                          acquisition="external", unannotated=0.0), "external cohort (other scanner)"),
        Stage("pretrain", "clearct.pretrain.train:run_pretrain",
              PretrainConfig(method="lecl", lam=size.lam, epochs=size.epochs, mlp_dim=size.mlp_dim,
                             proj_dim=size.proj_dim, out=at.encoder("lecl"),
                             lesion_crop_scale=list(size.lesion_crop_scale) if size.lesion_crop_scale else None,
                             **pretrain), f"LECL (λ = {size.lam:g}) pretraining of the slice encoder"),
        Stage("pretrain-supervised", "clearct.pretrain.train:run_pretrain",
              PretrainConfig(method="supervised", epochs=size.supervised_epochs, out=at.encoder("supervised"),
                             **pretrain), "the supervised ceiling: same network, per-slice lesion labels"),
    ]
    for arm in ARMS:
        for name, cohort in (("cohort", at.cohort), ("external", at.external)):
            stages.append(Stage(f"extract-{arm}" + ("-external" if name == "external" else ""),
                                "clearct.extract.run:run_extract",
                                ExtractConfig(scans=cohort / "scans.csv", encoder=encoder_spec(arm, size, at),
                                              image_size=size.encoder_px if arm == "random" else None,
                                              out=at.features(arm, name), workers=size.workers, **common),
                                f"{ARM_TITLES[arm]}: features of the {name} cohort, lung + abdomen window"))
    # positive control: the LECL features with the annotated lesions' key slices marked — separates "the MIL
    # stage cannot find lesion slices" from "the encoder does not set them apart"; the external cohort is marked
    # the same way (same seed → same directions per label)
    for name, cohort in (("cohort", at.cohort), ("external", at.external)):
        stages.append(Stage("control-marks" + ("-external" if name == "external" else ""),
                            "clearct.mil.planted:mark_lesion_slices",
                            LesionMarks(features=at.features("lecl", name), lesions=cohort / "lesions.csv",
                                        out=at.features("control", name), targets=tuple(TARGETS), seed=cfg.seed),
                            f"positive control: key slices of the {name} cohort marked"))
    for task, settings, what in (("location", location, "lesion location"), ("lung", lung, "lung abnormalities")):
        for arm in (*ARMS, "control") if task == "location" else ARMS:
            out = at.task(task, arm)
            crossval = CrossvalConfig(features=at.features(arm, "cohort"), out=out / "crossval", **settings)
            deploy = DeployConfig(model=crossval.out, features=at.features(arm, "external"),
                                  labels=at.external / "labels.csv", out=out / "deploy", bootstrap=size.bootstrap,
                                  seed=cfg.seed, **common)
            stages += [Stage(f"{task}-{arm}", "clearct.mil.crossval:run_crossval", crossval,
                             f"ABMIL on {what}, {ARM_TITLES[arm]}, cross-validated"),
                       Stage(f"{task}-{arm}-deploy", "clearct.inference.deploy:run_deploy", deploy,
                             "the fold ensemble on the external cohort")]
    for arm in ("lecl", "control"):
        models = at.task("location", arm) / "crossval"
        stages.append(Stage(f"attention-{arm}", "clearct.inference.attention:run_attention",
                            AttentionConfig(model=models, features=at.features(arm, "external"),
                                            out=root / "attention" / arm, scans=at.external / "scans.csv",
                                            lesions=at.external / "lesions.csv", figures=ATTENTION_FIGURES,
                                            **common), f"attention of {ARM_TITLES[arm]}, external cohort"))
    if predict_scan is not None:
        stages.append(Stage("predict", "clearct.inference.predict:run_predict",
                            PredictConfig(scan_path=predict_scan, model=at.task("location", "lecl") / "crossval",
                                          encoder=str(at.encoder("lecl")), out=root / "predict", **common),
                            "one scan → prediction.json"))
    return stages


def _call(function: str) -> Callable:
    from importlib import import_module

    module, name = function.split(":")
    return getattr(import_module(module), name)


INPUTS = "demo-inputs.json"  # hashes of the cohort tables the demo's encoder was trained on


def _input_hashes(config: PretrainConfig) -> dict[str, str]:
    """sha256 of scans.csv and lesions.csv: synth is deterministic, so equal hashes mean the same cohort."""
    return {p.name: sha256_file(p) for p in (Path(config.scans), Path(config.lesions)) if p.is_file()}


def _pretrain_done(config: PretrainConfig) -> bool:
    """encoder.json exists and was trained with the same settings (device and loader workers aside; fields left
    None here, such as the image size, were filled in by the run)."""
    manifest = Path(config.out) / "encoder.json"
    inputs = Path(config.out) / INPUTS
    if not manifest.is_file() or not inputs.is_file() or json.loads(inputs.read_text()) != _input_hashes(config):
        return False
    trained = json.loads(manifest.read_text()).get("info", {}).get("training", {})
    want = {k: v for k, v in config.model_dump(mode="json").items()
            if k not in {"device", "workers", "resume"} and v is not None}
    return all(k in trained and trained[k] == v for k, v in want.items())


@dataclass(frozen=True)
class StageTime:
    seconds: float  # wall clock
    cpu_seconds: float  # user + system of this process and its finished children (synth and loader workers)
    status: str  # "ran", "reused" or "exit N"


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(function: Callable[[], object]) -> tuple[object, float, float]:
    """(result, wall seconds, CPU seconds) of ``function()`` — CPU time says how long a shared machine took
    apart from waiting for the cores."""
    tick, cpu = time.perf_counter(), _cpu_seconds()
    result = function()
    return result, time.perf_counter() - tick, _cpu_seconds() - cpu


def run_stage(stage: Stage) -> StageTime:
    """Run one stage in this process. Log handlers that the stage's ``start_run`` attached are detached
    afterwards so each stage's log holds only its own lines."""
    if stage.name.startswith("pretrain") and _pretrain_done(stage.config):
        return StageTime(0.0, 0.0, "reused")
    with stage_logs():
        code, seconds, cpu = timed(lambda: _call(stage.function)(stage.config))
    if code:
        LOG.warning("demo: %s returned %s", stage.name, code)
    elif stage.name.startswith("pretrain"):
        atomic_write_text(Path(stage.config.out) / INPUTS, json.dumps(_input_hashes(stage.config)))
    return StageTime(seconds, cpu, "ran" if not code else f"exit {code}")


def run_demo(cfg: DemoConfig) -> int:
    """``clearct demo``: synth → pretrain → extract → crossval (+ positive control) → deploy → attention →
    predict → report."""
    from clearct.report.demo_report import build_demo_report, choose_scans
    from clearct.report.document import write_report

    root = Path(cfg.out).resolve()
    size = resolve_size(cfg)
    start_run(root, "demo", cfg)
    LOG.info("demo: size %s %s", cfg.size, json.dumps(asdict(size)))
    total = time.perf_counter()
    times: dict[str, StageTime] = {}
    # predict needs a scan of the external cohort, so its stage is known once synth has run
    stages = demo_stages(cfg, size, root)
    n = len(stages) + 2  # + predict + report
    for i, stage in enumerate(stages[:2]):
        times[stage.name] = _announce_and_run(i, n, stage, root)
    chosen = choose_scans(root / "external", count=1)
    stages = demo_stages(cfg, size, root, predict_scan=chosen[0].path if chosen else None)
    for i, stage in enumerate(stages[2:], start=2):
        times[stage.name] = _announce_and_run(i, n, stage, root)
    print(f"\n[{n}/{n}] report: figures and {root / 'report.html'}", flush=True)
    (md, page), seconds, cpu = timed(lambda: write_report(build_demo_report(root, cfg, size, times), root))
    times["report"] = StageTime(seconds, cpu, "ran")
    elapsed = time.perf_counter() - total
    record = {k: {"seconds": round(v.seconds, 2), "cpu_seconds": round(v.cpu_seconds, 2), "status": v.status}
              for k, v in times.items()}
    record["total"] = {"seconds": round(elapsed, 2), "cpu_seconds": round(sum(v.cpu_seconds for v in times.values()), 2),
                       "load_average": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count()}
    atomic_write_text(root / "demo-times.json", json.dumps(record, indent=1))
    _print_summary(root, times, elapsed, page, md)
    return 0


def _announce_and_run(i: int, n: int, stage: Stage, root: Path) -> StageTime:
    print(f"\n[{i + 1}/{n}] {stage.name}: {stage.description} → {_rel(stage.config.out, root)}", flush=True)
    return run_stage(stage)


def _rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.parent))
    except ValueError:
        return str(path)


def _print_summary(root: Path, times: dict[str, StageTime], elapsed: float, page: Path, md: Path) -> None:
    from clearct.report.demo_report import read_metrics

    print("\n=== clearct demo: summary ===")
    print(f"  {'stage':24s} {'wall':>9s} {'CPU':>9s}")
    for name, t in times.items():
        print(f"  {name:24s} {t.seconds:7.1f} s {t.cpu_seconds:7.1f} s  {t.status}")
    print(f"  {'total':24s} {elapsed:7.1f} s {sum(t.cpu_seconds for t in times.values()):7.1f} s  "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    at = Layout(root)
    for task, arms in (("location", (*ARMS, "control")), ("lung", ARMS)):
        for arm in arms:
            for part, set_name, label in (("crossval", "cv", "CV"), ("deploy", "deploy", "external")):
                m = read_metrics(at.task(task, arm) / part / "metrics.csv").get((set_name, "macro", "auroc"))
                if m is not None:
                    print(f"  {task} macro AUROC, {ARM_TITLES[arm]}, {label}: {m['value']:.3f} "
                          f"[{m['ci_low']:.3f}, {m['ci_high']:.3f}]")
    print(f"  report: {page}\n          {md}")
    logging.getLogger("clearct").info("demo: done in %.1f s", elapsed)
