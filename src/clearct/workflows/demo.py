"""``clearct demo``: the whole pipeline on synthetic cohorts, ending in ``DIR/report.html`` and ``DIR/report.md``.

Every stage is the command's own Python function called with its config model (the same code as
``clearct synth`` … ``clearct predict``), each writing into its own subfolder of ``DIR``
(:class:`~clearct.report.layouts.DemoLayout`), run by :mod:`clearct.workflows.runner`: re-running into the same
folder skips the stages that finished with the same settings and resumes the others.

Arms (rows of the report): the LECL encoder, the same architecture at random init, the supervised ceiling (the same
architecture trained on per-slice lesion labels), and the positive control (the LECL features with the key slices
marked). Tasks: lesion location (both windows) and lung abnormalities (lung window), each cross-validated on the
training cohort and deployed on the external one. Then the encoder arm whose location models learned most (the
highest macro CV AUROC, :func:`~clearct.report.demo_report.learned_arm`) is looked at: attention with
heatmaps on the external cohort (every encoder arm gets heatmaps for the pointing game, random init its floor), and
``predict`` of one external DICOM series with its viewer and DICOM objects.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from clearct.common.atomic import atomic_write_text
from clearct.common.runs import LOG, start_run
from clearct.config import (
    AttentionConfig,
    CrossvalConfig,
    CrossvalSettings,
    DemoConfig,
    DeployConfig,
    ExtractConfig,
    ExtractSettings,
    PredictConfig,
    PretrainConfig,
    PretrainSettings,
    SynthConfig,
    SynthSettings,
    resolve,
)
from clearct.evaluate.localization import heatmap_pointing
from clearct.extract.run import run_extract
from clearct.inference.attention import run_attention
from clearct.inference.deploy import run_deploy
from clearct.inference.predict import run_predict
from clearct.inference.review import run_crossval
from clearct.mil.planted import LesionMarks, mark_lesion_slices
from clearct.pretrain.train import run_pretrain
from clearct.report.demo_numbers import learned_arm, read_metrics
from clearct.report.demo_report import build_demo_report, choose_scans
from clearct.report.document import write_report
from clearct.report.layouts import ARM_TITLES, CONTROL, DEMO_ARMS, DEMO_TASKS, DemoLayout
from clearct.synth.cohort import run_synth
from clearct.synth.labels import LOCATIONS, LUNG_FINDINGS
from clearct.workflows.runner import Step, StepResult, run_steps, timed

ATTENTION_FIGURES = 3  # external scans drawn by the attention stage (figures for the report)
TARGETS = list(LOCATIONS)

# What each --size sets, for the fields the user leaves empty; everything else is the commands' own default.
SIZES: dict[str, dict] = {
    # a few seconds per stage: for tests
    "test": {"patients": 12, "external_patients": 6, "supervised_epochs": 1,
             "synth": {"size": 64, "slices": 16, "lesion_contrast": 2.0, "lesion_size_mm": [20.0, 60.0]},
             "pretrain": {"arch": "resnet_tiny", "image_size": 64, "epochs": 1, "batch_size": 32, "lr": 2e-3,
                          "lesion_share": 0.5, "lesion_crop_scale": [2.0, 4.0], "mlp_dim": 64, "proj_dim": 32,
                          "workers": 0},
             "extract": {"workers": 0},
             "crossval": {"folds": 2, "epochs": 2, "lr": 1e-3, "min_steps": 20, "bootstrap": 50}},
    # the default, for 2 CPU cores: ≥ 1,000 labelled scans, where LECL lies above random init and the supervised
    # ceiling learns the locations (benchmarks/RESULTS.md, "demo"); encoders at 96 px on 128-px slices; one LECL
    # epoch, warmed up over the whole of it; the ceiling until it learns (3 epochs); the training cohort as NIfTI
    # (read three times over by extraction, DICOM would cost minutes more), the external one DICOM as always
    "small": {"patients": 1200, "external_patients": 60, "supervised_epochs": 3,
              "synth": {"size": 128, "slices": 32, "lesion_contrast": 4.0, "lesion_size_mm": [30.0, 80.0],
                        "format": "nifti"},
              "pretrain": {"arch": "resnet_tiny", "image_size": 96, "epochs": 1, "warmup_epochs": 1.0,
                           "batch_size": 64, "lr": 4e-3, "lesion_share": 0.5, "lesion_crop_scale": [2.0, 4.0],
                           "mlp_dim": 512, "proj_dim": 128, "workers": 1},
              "extract": {"workers": 1},
              "crossval": {"folds": 5, "epochs": 32, "lr": 1e-3, "min_steps": 200, "bootstrap": 500}},
    # a GPU run: the paper's encoder and image size, a DeepLesion-sized slice count per epoch is still far away
    "full": {"patients": 1000, "external_patients": 300, "supervised_epochs": 10,
             "synth": {"size": 512, "slices": 64, "lesion_contrast": 1.0, "lesion_size_mm": [10.0, 50.0]},
             "pretrain": {"arch": "vit_conv_base", "image_size": 224, "epochs": 30, "batch_size": 256, "lr": 1.5e-4,
                          "mlp_dim": 4096, "proj_dim": 256, "workers": 8},
             "extract": {"workers": 8},
             "crossval": {"folds": 5, "epochs": 32, "lr": 1e-4, "min_steps": 2000, "bootstrap": 1000}},
}


@dataclass(frozen=True)
class DemoPlan:
    """A demo config with its ``--size`` preset applied: every setting of every stage."""

    patients: int
    external_patients: int
    supervised_epochs: int
    synth: SynthSettings
    pretrain: PretrainSettings  # the LECL arm's (the ceiling: the same, method supervised)
    extract: ExtractSettings
    crossval: CrossvalSettings


def resolve_size(cfg: DemoConfig) -> DemoPlan:
    """The user's values, then the ``--size`` preset, then the commands' defaults."""
    preset = SIZES[cfg.size]
    top = {k: getattr(cfg, k) if getattr(cfg, k) is not None else preset[k]
           for k in ("patients", "external_patients", "supervised_epochs")}
    return DemoPlan(**top,
                    synth=resolve(SynthSettings, {"format": "dicom", "scan_range": "cap", "workers": 2},
                                  preset["synth"], cfg.synth),
                    pretrain=resolve(PretrainSettings, {"method": "lecl", "log_every": 5}, preset["pretrain"],
                                     cfg.pretrain),
                    extract=resolve(ExtractSettings, preset["extract"], cfg.extract),
                    crossval=resolve(CrossvalSettings, preset["crossval"], cfg.crossval))


def encoder_spec(arm: str, plan: DemoPlan, at: DemoLayout) -> str:
    """What ``extract --encoder`` gets for an arm: a run folder, or the random-init registry entry."""
    return f"random:{plan.pretrain.arch}" if arm == "random" else str(at.encoder(arm))


def _cohort_steps(cfg: DemoConfig, plan: DemoPlan, at: DemoLayout) -> list[Step]:
    synth = plan.synth.model_dump()
    return [
        Step("synth", run_synth, SynthConfig(**synth, out=at.cohort, patients=plan.patients, seed=cfg.seed),
             at.cohort, f"training cohort ({plan.synth.format})"),
        # another seed → other patients; the external preset → another scanner; every lesion annotated so the
        # attention figures, the pointing game and the localisation share can use all lesions; DICOM whatever the
        # training cohort's format, since predict writes its DICOM objects for a DICOM series only
        Step("synth-external", run_synth,
             SynthConfig(**{**synth, "acquisition": "external", "unannotated": 0.0, "format": "dicom"},
                         out=at.external, patients=plan.external_patients, seed=cfg.seed + 1),
             at.external, "external cohort (other scanner, DICOM)"),
    ]


def _pretrain_steps(cfg: DemoConfig, plan: DemoPlan, at: DemoLayout) -> list[Step]:
    io = {"scans": at.cohort / "scans.csv", "lesions": at.cohort / "lesions.csv", "resume": True,
          "cache_dir": at.slice_cache, "device": cfg.device, "seed": cfg.seed}
    lecl = PretrainConfig(**plan.pretrain.model_dump(), out=at.encoder("lecl"), **io)
    supervised = lecl.model_copy(update={"method": "supervised", "epochs": plan.supervised_epochs,
                                         "out": at.encoder("supervised")})
    return [Step("pretrain", run_pretrain, lecl, lecl.out, f"LECL (λ = {lecl.lam:g}) pretraining of the slice encoder"),
            Step("pretrain-supervised", run_pretrain, supervised, supervised.out,
                 "the supervised ceiling: same network, per-slice lesion labels")]


def _feature_steps(cfg: DemoConfig, plan: DemoPlan, at: DemoLayout) -> list[Step]:
    steps = []
    for arm in DEMO_ARMS:
        for name, cohort in (("cohort", at.cohort), ("external", at.external)):
            # overwrite: the runner re-runs extraction only when the encoder changed (its features must follow)
            config = ExtractConfig(**plan.extract.model_dump(exclude={"image_size", "overwrite"}), overwrite=True,
                                   scans=cohort / "scans.csv",
                                   encoder=encoder_spec(arm, plan, at), out=at.features(arm, name),
                                   image_size=plan.pretrain.image_size if arm == "random" else plan.extract.image_size,
                                   device=cfg.device)
            steps.append(Step(f"extract-{arm}" + ("-external" if name == "external" else ""), run_extract, config,
                              config.out, f"{ARM_TITLES[arm]}: features of the {name} cohort, lung + abdomen window"))
    # positive control: the LECL features with the annotated lesions' key slices marked — separates "the MIL
    # stage cannot find lesion slices" from "the encoder does not set them apart"; the external cohort is marked
    # the same way (same seed → same directions per label)
    for name, cohort in (("cohort", at.cohort), ("external", at.external)):
        marks = LesionMarks(features=at.features("lecl", name), lesions=cohort / "lesions.csv",
                            out=at.features(CONTROL, name), targets=tuple(TARGETS), seed=cfg.seed)
        steps.append(Step("control-marks" + ("-external" if name == "external" else ""), mark_lesion_slices, marks,
                          marks.out, f"positive control: key slices of the {name} cohort marked"))
    return steps


def _task_steps(cfg: DemoConfig, plan: DemoPlan, at: DemoLayout) -> list[Step]:
    tasks = {"location": ({"targets": TARGETS}, "lesion location"),
             "lung": ({"targets": list(LUNG_FINDINGS), "use_windows": ["lung"]}, "lung abnormalities")}
    steps = []
    for task, (settings, what) in tasks.items():
        # viewers of the most confident errors where the report links them: the location models
        viewers = task == "location"
        for arm in DEMO_TASKS[task]:
            crossval = CrossvalConfig(**{**plan.crossval.model_dump(), **settings, "task": "multilabel"},
                                      features=at.features(arm, "cohort"), labels=at.cohort / "labels.csv",
                                      out=at.crossval(task, arm), error_viewers=viewers, seed=cfg.seed,
                                      device=cfg.device)
            deploy = DeployConfig(model=crossval.out, features=at.features(arm, "external"),
                                  labels=at.external / "labels.csv", lesions=at.external / "lesions.csv",
                                  out=at.deploy(task, arm), error_viewers=viewers, bootstrap=plan.crossval.bootstrap,
                                  seed=cfg.seed, device=cfg.device)
            steps += [Step(f"{task}-{arm}", run_crossval, crossval, crossval.out,
                           f"ABMIL on {what}, {ARM_TITLES[arm]}, cross-validated"),
                      Step(f"{task}-{arm}-deploy", run_deploy, deploy, deploy.out,
                           "the fold ensemble on the external cohort")]
    return steps


def _look_steps(cfg: DemoConfig, plan: DemoPlan, at: DemoLayout, learned: str, predict_scan: Path | None
                ) -> list[Step]:
    """Attention of every arm's location models on the external cohort (with heatmaps for the encoder arms: the
    pointing game of each, random init its floor; figures and viewers for the learned arm and the positive control)
    and predict of one external scan with the learned arm's models and encoder."""
    external = {"scans": at.external / "scans.csv", "lesions": at.external / "lesions.csv", "device": cfg.device}
    steps = []
    for arm in (*DEMO_ARMS, CONTROL):
        # the control's features are marked copies: an encoder cannot reproduce them, so no heatmaps there
        attention = AttentionConfig(model=at.crossval("location", arm), features=at.features(arm, "external"),
                                    out=at.attention(arm), heatmaps=arm != CONTROL,
                                    figures=ATTENTION_FIGURES if arm in (learned, CONTROL) else 0, **external)
        steps.append(Step(f"attention-{arm}", run_attention, attention, attention.out,
                          f"attention of {ARM_TITLES[arm]} over the external scans"
                          + (", heatmaps of its top slices" if attention.heatmaps else "")))
    if predict_scan is not None:
        predict = PredictConfig(scan_path=predict_scan, model=at.crossval("location", learned),
                                encoder=encoder_spec(learned, plan, at), lesions=at.external / "lesions.csv",
                                out=at.predict, device=cfg.device)
        steps.append(Step("predict", run_predict, predict, predict.out,
                          f"one external DICOM series with {ARM_TITLES[learned]}: prediction.json, heatmaps, "
                          "viewer.html, DICOM objects"))
    return steps


def demo_steps(cfg: DemoConfig, plan: DemoPlan, root: Path, predict_scan: Path | None = None,
               learned: str | None = None) -> list[Step]:
    """The steps of a demo run into ``root`` (pure: nothing is run or written).

    ``learned`` is the arm looked at (chosen after the location crossvals), ``predict_scan`` the scan given to
    predict (chosen after synth); without ``learned`` the attention and predict steps are left out, without
    ``predict_scan`` the predict step.
    """
    at = DemoLayout(root)
    steps = (_cohort_steps(cfg, plan, at) + _pretrain_steps(cfg, plan, at) + _feature_steps(cfg, plan, at)
             + _task_steps(cfg, plan, at))
    return steps + (_look_steps(cfg, plan, at, learned, predict_scan) if learned is not None else [])


def run_demo(cfg: DemoConfig) -> int:
    """``clearct demo``: synth → pretrain → extract → crossval (+ positive control) → deploy → attention →
    predict → report."""
    root = Path(cfg.out).resolve()
    plan = resolve_size(cfg)
    start_run(root, "demo", cfg)
    LOG.info("demo: size %s → %s", cfg.size, json.dumps({k: v.model_dump(mode="json") if hasattr(v, "model_dump")
                                                           else v for k, v in plan.__dict__.items()}))
    at = DemoLayout(root)
    total, load_start = time.perf_counter(), os.getloadavg()
    # predict needs a scan of the external cohort (known once synth has run), the attention and predict steps the
    # arm that learned (known once the location crossvals have run)
    steps = demo_steps(cfg, plan, root)
    n = len(steps) + len(DEMO_ARMS) + 3  # + attention (encoder arms, control) + predict + report
    times = run_steps(steps[:2], root, total=n, stop_on_error=False)
    chosen = choose_scans(at.external, count=1)
    times |= run_steps(steps[2:], root, done=steps[:2], total=n, stop_on_error=False)
    learned = learned_arm(at)
    LOG.info("demo: the arm looked at is %s (highest macro CV AUROC on lesion location)", learned)
    looks = demo_steps(cfg, plan, root, predict_scan=chosen[0].path if chosen else None, learned=learned)
    times |= run_steps(looks[len(steps):], root, done=steps, total=n, stop_on_error=False)
    print(f"\n[{n}/{n}] report: figures and {root / 'report.html'}", flush=True)
    (md, page), seconds, cpu = timed(lambda: write_report(build_demo_report(at, cfg, plan, times), root))
    times["report"] = StepResult("ran", seconds, cpu)
    elapsed = time.perf_counter() - total
    record: dict[str, dict] = {k: {"seconds": round(v.seconds, 2), "cpu_seconds": round(v.cpu_seconds, 2),
                                   "status": v.status} for k, v in times.items()}
    record["total"] = {"seconds": round(elapsed, 2), "cpu_seconds": round(sum(v.cpu_seconds for v in times.values()), 2),
                       "load_average_start": [round(x, 2) for x in load_start],
                       "load_average": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count()}
    atomic_write_text(root / "demo-times.json", json.dumps(record, indent=1))
    _print_summary(at, times, elapsed, page, md, learned)
    failed = [name for name, t in times.items() if t.status.startswith("exit")]
    if failed:  # the report was still written from what the other stages produced
        print(f"clearct demo: {len(failed)} stage(s) reported failed inputs: {', '.join(failed)} (see their "
              "failures.csv)", file=sys.stderr)
    return 1 if failed else 0


def _print_summary(at: DemoLayout, times: dict[str, StepResult], elapsed: float, page: Path, md: Path,
                   learned: str) -> None:
    print("\n=== clearct demo: summary ===")
    print(f"  {'stage':24s} {'wall':>9s} {'CPU':>9s}")
    for name, t in times.items():
        print(f"  {name:24s} {t.seconds:7.1f} s {t.cpu_seconds:7.1f} s  {t.status}")
    print(f"  {'total':24s} {elapsed:7.1f} s {sum(t.cpu_seconds for t in times.values()):7.1f} s  "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    for task, arms in DEMO_TASKS.items():
        for arm in arms:
            for folder, set_name, label in ((at.crossval(task, arm), "cv", "CV"),
                                            (at.deploy(task, arm), "deploy", "external")):
                m = read_metrics(folder / "metrics.csv").get((set_name, "macro", "auroc"))
                if m is not None:
                    print(f"  {task} macro AUROC, {ARM_TITLES[arm]}, {label}: {m['value']:.3f} "
                          f"[{m['ci_low']:.3f}, {m['ci_high']:.3f}]")
    print(f"  looked at: {ARM_TITLES[learned]} (the highest macro CV AUROC on lesion location): predict, heatmaps "
          f"and viewers use its models and encoder")
    for arm in DEMO_ARMS:
        if (at.attention(arm) / "heatmaps").is_dir():
            p = heatmap_pointing(at.attention(arm) / "heatmaps", at.external / "lesions.csv").total
            print(f"  pointing game, {ARM_TITLES[arm]}: "
                  + (f"{p.share:.2f} ({p.hits}/{p.slices} top slices on a lesion)" if p.slices else "–"))
    print(f"  report: {page}\n          {md}")
    logging.getLogger("clearct").info("demo: done in %.1f s", elapsed)
