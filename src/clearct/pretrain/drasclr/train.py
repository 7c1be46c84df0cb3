"""DrasCLR pretraining: ``clearct pretrain --method drasclr`` → ``run_drasclr(cfg)``.

MoCo-v2 style (as the paper): a query encoder with an MLP head trained by SGD, a momentum key encoder, and a
queue of negatives kept per location bin. Each step draws B anchor patches at random over all scans; the query
view, the key view and the anchor's R nearest patches (neighbours) are all resampled with their own random
affine + intensity augmentation. Loss = L_local(q, k) + β · L_neighbour(r, k) (``losses.py``).

Sizes come from a preset (``--drasclr-preset``): ``paper`` (the authors' 32³ patches of 1 mm, batch 256) or
``cpu`` (16³ patches of 2 mm on a 30 mm grid, a smaller network, batch 32), ``auto`` = cpu without a GPU; a flag
given explicitly always wins. The resolved sizes, the steps per epoch and, after the first steps, an estimate of
the epoch time are printed; a progress line (step, patches/s, loss) follows at least every
:data:`PROGRESS_SECONDS` on the terminal and in ``pretrain.log``.

Run folder: ``cache/`` (per-scan cropped region and patch plan, reused), ``drasclr-checkpoint.pt`` (written
atomically after every epoch with optimiser, queue and RNG state; ``--resume`` continues from it, refusing other
settings), ``drasclr-log.csv`` (loss, lr, patches/s per epoch), ``failures.csv`` (scans left out) and, at the end,
``encoder.safetensors`` + ``encoder.json`` through :func:`clearct.encoders.save_encoder_run` with arch ``drasclr``.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import logging
import math
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from clearct.common.atomic import atomic_path, atomic_write_text, remove_leftovers
from clearct.common.device import autocast_for, resolve_device, threads, training_threads
from clearct.common.errors import ClearctError
from clearct.config import DrasclrSettings, PretrainConfig, resolve
from clearct.encoders.drasclr.mask import MaskKind
from clearct.encoders.drasclr.model import DrasCLREncoder, EncoderSpec
from clearct.encoders.drasclr.patches import (
    PatchSpec,
    ScanPatches,
    nearest_neighbours,
    plan_patches,
    random_affines,
    sample_patches,
)
from clearct.io.tables import ScanRecord
from clearct.pretrain.drasclr.losses import LocationQueue, local_contrastive_loss, neighbour_contrastive_loss

LOG = logging.getLogger("clearct")
CHECKPOINT = "drasclr-checkpoint.pt"
LOG_CSV = "drasclr-log.csv"
PROGRESS_SECONDS = 30.0  # a progress line at least this often: a long epoch never looks stalled
ESTIMATE_AFTER = 3  # steps measured (after the first, which warms up) before the epoch time is estimated

# Sizes per preset: they fill the size fields left empty (None), the batch size included.
PRESETS: dict[str, dict] = {
    "paper": {"batch_size": 256, "patch_size": 32, "voxel_mm": 1.0, "grid_mm": 20.0, "channels": [8, 16, 32, 64],
              "experts": 8, "queue": 1024},
    # the same 32 mm patch extent at half the resolution, sparser centres and a 3-stage network: an epoch ≈ 40×
    # shorter on 2 CPU cores (benchmarks/RESULTS.md, drasclr 10-patient CPU run)
    "cpu": {"batch_size": 32, "patch_size": 16, "voxel_mm": 2.0, "grid_mm": 30.0, "channels": [8, 16, 32],
            "experts": 4, "queue": 256},
}
# the drasclr settings a resumed run must share with its checkpoint (besides batch size and seed; epochs, device
# and workers may change)
RESUME_KEYS = ("patch_size", "voxel_mm", "grid_mm", "channels", "experts", "queue", "mask", "window", "embed_dim",
               "proj_dim", "location_bins", "neighbours")


def resolve_preset(cfg: PretrainConfig) -> tuple[PretrainConfig, str]:
    """``cfg`` with the preset's sizes in every size field left empty (None), and the preset's name."""
    name = cfg.drasclr.preset
    if name == "auto":
        name = "paper" if resolve_device(cfg.device).type == "cuda" else "cpu"
    sizes = {k: v for k, v in PRESETS[name].items() if k != "batch_size"}
    drasclr = resolve(DrasclrSettings, sizes, cfg.drasclr).model_copy(update={"preset": name})
    batch_size = cfg.batch_size if cfg.batch_size is not None else PRESETS[name]["batch_size"]
    return cfg.model_copy(update={"drasclr": drasclr, "batch_size": batch_size}), name


def describe_sizes(cfg: PretrainConfig) -> str:
    """The sizes that decide the cost of a step, in one line."""
    d = cfg.drasclr
    assert d.voxel_mm is not None and d.grid_mm is not None and d.channels is not None, "resolve_preset's"
    return (f"batch {cfg.batch_size}, {d.patch_size}³ patches of {d.voxel_mm:g} mm on a {d.grid_mm:g} mm grid, "
            f"widths {'-'.join(map(str, d.channels))}, {d.experts} experts, queue {d.queue}")


def _resume_settings(cfg: PretrainConfig) -> dict:
    return {"batch_size": cfg.batch_size, "seed": cfg.seed,
            **{f"drasclr.{k}": v for k, v in cfg.drasclr.model_dump(mode="json", include=set(RESUME_KEYS)).items()}}


def specs_from_config(cfg: PretrainConfig) -> tuple[EncoderSpec, PatchSpec]:
    """The network and patch settings of a (preset-resolved) PretrainConfig's drasclr section."""
    d = cfg.drasclr
    assert (d.patch_size is not None and d.voxel_mm is not None and d.grid_mm is not None
            and d.channels is not None and d.experts is not None), "resolve_preset fills the sizes"
    lo, hi = (float(v) for v in d.window)
    patch = PatchSpec(patch_size=d.patch_size, voxel_mm=d.voxel_mm, grid_mm=d.grid_mm, window=(lo, hi), mask=d.mask)
    return EncoderSpec(tuple(d.channels), d.embed_dim, d.experts), patch


class DrasCLR(nn.Module):
    """Query encoder + MLP head (trained) and their momentum copies (keys)."""

    def __init__(self, encoder: DrasCLREncoder, proj_dim: int):
        super().__init__()
        d = encoder.embed_dim
        self.encoder_q = encoder
        self.head_q = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, proj_dim))
        self.encoder_k = copy.deepcopy(self.encoder_q)
        self.head_k = copy.deepcopy(self.head_q)
        for p in self._key_params():
            p.requires_grad_(False)

    def _key_params(self):
        return [*self.encoder_k.parameters(), *self.head_k.parameters()]

    def query(self, x: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        return self.head_q(self.encoder_q(x, loc))

    @torch.no_grad()
    def key(self, x: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        return self.head_k(self.encoder_k(x, loc))

    @torch.no_grad()
    def momentum_update(self, m: float) -> None:
        query = [*self.encoder_q.parameters(), *self.head_q.parameters()]
        for pk, pq in zip(self._key_params(), query):
            pk.mul_(m).add_(pq.detach(), alpha=1.0 - m)


@dataclass
class Views:
    """One training batch: query / key views (B, 1, P³), neighbours (B, R, 1, P³) and locations."""

    query: torch.Tensor
    key: torch.Tensor
    neighbours: torch.Tensor
    loc: torch.Tensor
    neighbour_loc: torch.Tensor

    def to(self, device: torch.device) -> Views:
        return Views(**{k: v.to(device) for k, v in asdict(self).items()})


def augment_intensity(
    x: torch.Tensor, generator: torch.Generator, gamma: tuple[float, float] = (0.7, 1.5), noise: float = 0.05
) -> torch.Tensor:
    """Random contrast (gamma on the [0, 1] scale) and Gaussian noise per patch — the authors' 'g' and 'c'."""
    n = x.shape[0]
    shape = (n,) + (1,) * (x.ndim - 1)
    g = gamma[0] + (gamma[1] - gamma[0]) * torch.rand(shape, generator=generator)
    x = ((x + 1) / 2).clamp(0, 1) ** g * 2 - 1
    return x + torch.randn(x.shape, generator=generator) * noise * torch.rand(shape, generator=generator)


def draw_views(
    scans: list[ScanPatches],
    neighbours: list[np.ndarray],
    anchors: list[tuple[int, int]],
    spec: PatchSpec,
    generator: torch.Generator,
) -> Views:
    """Resample the two views and the neighbours of each (scan, patch) anchor, each with its own augmentation."""
    q, k, r, loc, nloc = [], [], [], [], []
    for s, i in anchors:
        scan, nb = scans[s], neighbours[s][i]
        q.append(sample_patches(scan, np.array([i]), spec, random_affines(1, generator)))
        k.append(sample_patches(scan, np.array([i]), spec, random_affines(1, generator)))
        r.append(sample_patches(scan, nb, spec, random_affines(len(nb), generator)))
        loc.append(scan.loc[i])
        nloc.append(scan.loc[nb])
    r_all = augment_intensity(torch.cat(r), generator)
    return Views(
        query=augment_intensity(torch.cat(q), generator),
        key=augment_intensity(torch.cat(k), generator),
        neighbours=r_all.reshape(len(anchors), -1, *r_all.shape[1:]),
        loc=torch.from_numpy(np.stack(loc)),
        neighbour_loc=torch.from_numpy(np.stack(nloc)),
    )


def training_step(
    model: DrasCLR, queue: LocationQueue, views: Views, *, tau: float, beta: float, momentum: float
) -> dict[str, torch.Tensor]:
    """Forward both branches, compute both losses against the location queue, then enqueue the keys."""
    b, r = views.neighbours.shape[:2]
    q = model.query(views.query, views.loc)
    nbr = model.query(views.neighbours.flatten(0, 1), views.neighbour_loc.flatten(0, 1)).reshape(b, r, -1)
    model.momentum_update(momentum)
    k = model.key(views.key, views.loc)
    bins = queue.bin_of(views.loc)
    negatives = queue.negatives(bins)
    local = local_contrastive_loss(q.float(), k.float(), negatives, tau=tau)
    neighbour = neighbour_contrastive_loss(nbr.float(), k.float(), negatives, tau=tau)
    queue.enqueue(k, bins)
    return {"loss": local + beta * neighbour, "local": local.detach(), "neighbour": neighbour.detach()}


def cosine_lr(base: float, epoch: int, epochs: int) -> float:
    """MoCo v2's per-epoch cosine decay."""
    return base * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def _save_checkpoint(path: Path, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def _write_log(path: Path, history: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, text.getvalue())


def _say(line: str) -> None:
    """A progress line in the log and on the terminal (between progress-bar redraws)."""
    LOG.info(line)
    tqdm.write(line, file=sys.stderr)


class Progress:
    """Progress lines for one epoch: step, patches/s, loss, and the estimated epoch time once it is known.

    Used as a context manager it also keeps a heartbeat: when one step takes longer than ``every_s`` (the paper's
    sizes on a CPU: ≈ 1.5 min a step), a line says which step is still running, so the log never goes quiet.
    """

    def __init__(self, epoch: int, epochs: int, steps: int, patches_per_step: int, every_s: float):
        self.epoch, self.epochs, self.steps, self.per_step = epoch, epochs, steps, patches_per_step
        self.every_s = every_s
        self.start = self.last = time.perf_counter()
        self.warm: float | None = None  # time when the first (warm-up) step ended
        self.done = 0
        self._stop = threading.Event()
        self._heart: threading.Thread | None = None

    def __enter__(self) -> Progress:
        if self.every_s > 0:
            self._heart = threading.Thread(target=self._beat, name="drasclr-progress", daemon=True)
            self._heart.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._heart is not None:
            self._heart.join()

    def _beat(self) -> None:
        while not self._stop.wait(min(self.every_s, 5.0)):
            quiet = time.perf_counter() - self.last
            if quiet >= self.every_s:
                _say(f"drasclr epoch {self.epoch}/{self.epochs} step {self.done + 1}/{self.steps} still running "
                     f"({quiet / 60:.1f} min since the last line)")
                self.last = time.perf_counter()

    def step(self, done: int, loss: float) -> None:
        now = time.perf_counter()
        self.done = done
        if done == 1:
            self.warm = now
        estimate = ""
        if done > ESTIMATE_AFTER:
            warm = self.warm
            assert warm is not None  # set by step 1
            per = (now - warm) / (done - 1)
            total = (now - warm) + (warm - self.start) + per * (self.steps - done)
            estimate = f"; epoch ≈ {total / 60:.1f} min ({per * (self.steps - done) / 60:.1f} min left)"
        due = now - self.last >= self.every_s or done in (1, ESTIMATE_AFTER + 1) or done == self.steps
        if due:
            rate = self.per_step * done / max(now - self.start, 1e-9)
            _say(f"drasclr epoch {self.epoch}/{self.epochs} step {done}/{self.steps}: loss {loss:.4f}, "
                 f"{rate:.1f} patches/s{estimate}")
            self.last = now


def _check_resume(state: dict, cfg: PretrainConfig, path: Path) -> None:
    saved, now = state.get("settings", {}), _resume_settings(cfg)
    differ = [k for k in now if saved.get(k) != now[k]]
    if differ:
        pairs = ", ".join(f"{k}: {saved.get(k)!r} → {now.get(k)!r}" for k in differ)
        raise ClearctError(f"--resume with different settings ({pairs}); use a new --out or the old settings", path)


@dataclass
class _Loop:
    """What every epoch of one training run uses."""

    model: DrasCLR
    queue: LocationQueue
    optimizer: torch.optim.Optimizer
    scans: list[ScanPatches]
    neighbours: list[np.ndarray]
    anchors: list[tuple[int, int]]
    generator: torch.Generator
    batch: int
    device: torch.device

    @property
    def steps(self) -> int:
        return len(self.anchors) // self.batch


def _steps(loop: _Loop, cfg: PretrainConfig, epoch: int, patch: PatchSpec, sums: dict,
           report: Progress) -> None:
    """The optimiser steps of one epoch (anchors in a fresh random order), summing the losses into ``sums``."""
    order = torch.randperm(len(loop.anchors), generator=loop.generator).tolist()
    bar = tqdm(range(loop.steps), desc=f"drasclr epoch {epoch + 1}/{cfg.epochs}", leave=False)
    for step in bar:
        chosen = [loop.anchors[j] for j in order[step * loop.batch : (step + 1) * loop.batch]]
        with threads(1):  # many small tensors: OpenMP barriers cost more than a second thread saves
            views = draw_views(loop.scans, loop.neighbours, chosen, patch, loop.generator)
        with autocast_for(loop.device):
            losses = training_step(loop.model, loop.queue, views.to(loop.device), tau=cfg.drasclr.tau,
                                   beta=cfg.drasclr.beta, momentum=cfg.drasclr.momentum)
        loop.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        loop.optimizer.step()
        for name in sums:
            sums[name] += float(losses[name].detach())
        loss = float(losses["loss"].detach())
        bar.set_postfix(loss=f"{loss:.3f}")
        report.step(step + 1, loss)


def _epoch(loop: _Loop, cfg: PretrainConfig, epoch: int, patch: PatchSpec, per_step: int,
           progress_s: float) -> dict:
    """One epoch over every anchor in a random order; the row of drasclr-log.csv."""
    lr = cosine_lr(cfg.drasclr.lr, epoch, cfg.epochs)
    for group in loop.optimizer.param_groups:
        group["lr"] = lr
    loop.model.train()
    sums = {"loss": 0.0, "local": 0.0, "neighbour": 0.0}
    t0 = time.perf_counter()
    with Progress(epoch + 1, cfg.epochs, loop.steps, per_step, progress_s) as report:
        _steps(loop, cfg, epoch, patch, sums, report)
    seconds = time.perf_counter() - t0
    row = {"epoch": epoch + 1, **{k: v / loop.steps for k, v in sums.items()}, "lr": lr,
           "patches_per_s": loop.steps * per_step / seconds}
    _say(f"drasclr epoch {epoch + 1}/{cfg.epochs} done in {seconds / 60:.1f} min: loss {row['loss']:.4f} "
         f"(local {row['local']:.4f}, neighbour {row['neighbour']:.4f}), lr {lr:.2e}, "
         f"{row['patches_per_s']:.1f} patches/s")
    return row


def train_drasclr(scans: list[ScanPatches], cfg: PretrainConfig, *,
                  progress_s: float = PROGRESS_SECONDS) -> DrasCLR:
    """Train on prepared scans for ``cfg.epochs`` (resuming from ``cfg.out`` when ``cfg.resume``)."""
    assert cfg.batch_size is not None and cfg.drasclr.queue is not None, "resolve_preset fills them"
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    enc_spec, patch = specs_from_config(cfg)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    model = DrasCLR(DrasCLREncoder(enc_spec, patch), cfg.drasclr.proj_dim).to(device)
    queue = LocationQueue(cfg.drasclr.location_bins, cfg.drasclr.queue, cfg.drasclr.proj_dim, generator).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.drasclr.lr, momentum=0.9, weight_decay=1e-4)
    anchors = [(s, i) for s, scan in enumerate(scans) for i in range(len(scan))]
    loop = _Loop(model, queue, optimizer, scans, [nearest_neighbours(s.center_mm, cfg.drasclr.neighbours)
                                                  for s in scans], anchors, generator,
                 min(cfg.batch_size, len(anchors)), device)
    per_step = loop.batch * (2 + cfg.drasclr.neighbours)  # query, key and R neighbour views per anchor
    _say(f"drasclr: {len(scans)} scans, {len(anchors)} patches → {loop.steps} steps of {loop.batch} anchors "
         f"({per_step} patches) per epoch, {cfg.epochs} epoch(s), device {device}")
    start, history = 0, []
    ckpt = out / CHECKPOINT
    if cfg.resume and ckpt.exists():
        try:
            state = torch.load(ckpt, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated or foreign file
            raise ClearctError(f"cannot read the checkpoint: {type(exc).__name__}: {exc}", ckpt) from exc
        _check_resume(state, cfg, ckpt)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        queue.load_state_dict(state["queue"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        start, history = int(state["epoch"]), list(state["history"])
        LOG.info("drasclr: resumed from %s at epoch %d", ckpt, start)
    with training_threads(device.type == "cpu", _say, "drasclr"):
        for epoch in range(start, cfg.epochs):
            history.append(_epoch(loop, cfg, epoch, patch, per_step, progress_s))
            _save_checkpoint(ckpt, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "queue": queue.state_dict(),
                "generator": generator.get_state(), "torch_rng": torch.get_rng_state(), "epoch": epoch + 1,
                "history": history, "settings": _resume_settings(cfg),
            })
            _write_log(out / LOG_CSV, history)
    return model


def _cache_key(record: ScanRecord, spec: PatchSpec) -> str:
    text = json.dumps({"path": str(Path(record.path).resolve()), "spec": asdict(spec),
                       **({"series": record.series} if record.series else {})}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cached_plan(record: ScanRecord, spec: PatchSpec, cache: Path,
                png_values: str | None = None) -> ScanPatches:
    """Read, mask and plan one scan, or load that plan from ``cache`` (the region memory-mapped)."""
    from clearct.io import read_scan

    stem = cache / f"{record.scan_id}-{_cache_key(record, spec)}"
    region_file, meta_file = stem.with_suffix(".npy"), stem.with_suffix(".npz")
    if not (region_file.exists() and meta_file.exists()):
        scan = plan_patches(read_scan(record, png_values=png_values), spec)
        with atomic_path(region_file, suffix=".npy") as tmp:
            np.save(tmp, scan.region)
        fields = {k: v for k, v in asdict(scan).items() if k != "region"}
        with atomic_path(meta_file, suffix=".npz") as tmp:
            arrays: dict[str, Any] = {k: np.asarray(v) for k, v in fields.items()}
            np.savez(tmp, **arrays)
    meta = np.load(meta_file)
    dz, dy, dx = (float(s) for s in meta["spacing_mm"])
    return ScanPatches(
        region=np.load(region_file, mmap_mode="r"),
        spacing_mm=(dz, dy, dx),
        origin=meta["origin"],
        centers_vox=meta["centers_vox"],
        center_mm=meta["center_mm"],
        loc=meta["loc"],
        slice_index=meta["slice_index"],
        mask_kind=cast(MaskKind, str(meta["mask_kind"])),  # as plan_patches wrote it
        scan_id=record.scan_id,
        patient_id=record.patient_id,
    )


def _remove_leftovers(out: Path, records: Sequence[ScanRecord], spec: PatchSpec) -> None:
    """Temporary files of a run killed while writing (checkpoint, log, cache, encoder)."""
    remove_leftovers(out, [CHECKPOINT, LOG_CSV, "failures.csv", "encoder.json", "config.yaml"])
    remove_leftovers(out, ["encoder.safetensors"], suffix=".safetensors")
    stems = [f"{r.scan_id}-{_cache_key(r, spec)}" for r in records]
    for ext in (".npy", ".npz"):
        remove_leftovers(out / "cache", [stem + ext for stem in stems], suffix=ext)


def run_drasclr(cfg: PretrainConfig) -> int:
    """``clearct pretrain --method drasclr``: plan patches per scan (cached), train, export the encoder.

    A scan that cannot be read or gives too few patches is listed (terminal, log, failures.csv) and left out; the
    exit code is then 1 after the encoder is exported from the others.
    """
    from clearct.common.failures import Failures
    from clearct.common.runs import start_run
    from clearct.encoders import save_encoder_run
    from clearct.io import read_scans_table

    cfg, preset = resolve_preset(cfg)
    records = read_scans_table(cfg.scans)  # before the run folder exists
    out = start_run(cfg.out, "pretrain", cfg)
    _, patch = specs_from_config(cfg)
    _remove_leftovers(out, records, patch)
    _say(f"drasclr: preset {preset}: {describe_sizes(cfg)}"
         + ("" if preset == "paper" else " (the paper's sizes: --drasclr-preset paper)"))

    scans, failures = [], Failures("pretrain")
    for record in tqdm(records, desc="drasclr: masks and patch grids"):
        try:
            scan = cached_plan(record, patch, out / "cache", cfg.png_values)
            if len(scan) <= cfg.drasclr.neighbours:
                raise ClearctError(f"only {len(scan)} patches in the {scan.mask_kind} mask", record.path)
        except Exception as exc:  # this scan is left out; the rest train
            failures.add(record.scan_id, record.path, exc)
            continue
        scans.append(scan)
    listed = failures.write(out / "failures.csv")
    if not scans:
        raise ClearctError("no scan gave DrasCLR patches (see the lines above)", cfg.scans)
    model = train_drasclr(scans, cfg)
    encoder = model.encoder_q.cpu().eval()
    patches = [len(s) for s in scans]
    skipped = [r["scan_id"] for r in failures.rows]
    info = {
        **encoder.info(),
        "method": "drasclr",
        "instance_kind": encoder.instance_kind,
        "training": cfg.model_dump(mode="json"),
        "data": {"scans": len(scans), "skipped": skipped, "patches": int(sum(patches)),
                 "lung_masks": sum(s.mask_kind == "lung" for s in scans)},
    }
    save_encoder_run(out, encoder, arch="drasclr", windows=[(patch.window_name, *patch.window)], info=info)
    _say(f"drasclr: exported the encoder to {out}" + (f"; {failures.summary(listed)}" if failures else ""))
    return 1 if failures else 0
