"""DrasCLR pretraining: ``clearct pretrain --method drasclr`` → ``run_drasclr(cfg)``.

MoCo-v2 style (as the paper): a query encoder with an MLP head trained by SGD, a momentum key encoder, and a
queue of negatives kept per location bin. Each step draws B anchor patches at random over all scans; the query
view, the key view and the anchor's R nearest patches (neighbours) are all resampled with their own random
affine + intensity augmentation. Loss = L_local(q, k) + β · L_neighbour(r, k) (``losses.py``).

Run folder: ``cache/`` (per-scan cropped region and patch plan, reused), ``drasclr-checkpoint.pt`` (written
atomically after every epoch with optimiser, queue and RNG state; ``--resume`` continues from it),
``drasclr-log.csv`` (loss, lr, patches/s per epoch) and, at the end, ``encoder.safetensors`` + ``encoder.json``
through :func:`clearct.encoders.save_encoder_run` with arch ``drasclr``.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from clearct.common.atomic import atomic_path, atomic_write_text
from clearct.common.device import autocast_for, resolve_device
from clearct.common.errors import ClearctError
from clearct.pretrain.drasclr.losses import LocationQueue, local_contrastive_loss, neighbour_contrastive_loss
from clearct.pretrain.drasclr.model import DrasCLREncoder, EncoderSpec
from clearct.pretrain.drasclr.patches import (
    PatchSpec,
    ScanPatches,
    nearest_neighbours,
    plan_patches,
    random_affines,
    sample_patches,
)

LOG = logging.getLogger("clearct")
CHECKPOINT = "drasclr-checkpoint.pt"
LOG_CSV = "drasclr-log.csv"


def specs_from_config(cfg) -> tuple[EncoderSpec, PatchSpec]:
    """The network and patch settings of a PretrainConfig's drasclr_* fields."""
    lo, hi = (float(v) for v in cfg.drasclr_window)
    patch = PatchSpec(
        patch_size=cfg.drasclr_patch_size,
        voxel_mm=cfg.drasclr_voxel_mm,
        grid_mm=cfg.drasclr_grid_mm,
        window=(lo, hi),
        mask=cfg.drasclr_mask,
    )
    return EncoderSpec(tuple(cfg.drasclr_channels), cfg.drasclr_embed_dim, cfg.drasclr_experts), patch


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


def train_drasclr(scans: list[ScanPatches], cfg) -> DrasCLR:
    """Train on prepared scans for ``cfg.epochs`` (resuming from ``cfg.out`` when ``cfg.resume``)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    enc_spec, patch = specs_from_config(cfg)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    model = DrasCLR(DrasCLREncoder(enc_spec, patch), cfg.drasclr_proj_dim).to(device)
    queue = LocationQueue(cfg.drasclr_location_bins, cfg.drasclr_queue, cfg.drasclr_proj_dim, generator).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.drasclr_lr, momentum=0.9, weight_decay=1e-4)
    neighbours = [nearest_neighbours(s.center_mm, cfg.drasclr_neighbours) for s in scans]
    anchors = [(s, i) for s, scan in enumerate(scans) for i in range(len(scan))]
    batch = min(cfg.batch_size or 256, len(anchors))
    steps = len(anchors) // batch
    start, history = 0, []
    ckpt = out / CHECKPOINT
    if cfg.resume and ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        queue.load_state_dict(state["queue"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        start, history = int(state["epoch"]), list(state["history"])
        LOG.info("drasclr: resumed from %s at epoch %d", ckpt, start)
    for epoch in range(start, cfg.epochs):
        lr = cosine_lr(cfg.drasclr_lr, epoch, cfg.epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        order = torch.randperm(len(anchors), generator=generator).tolist()
        sums = {"loss": 0.0, "local": 0.0, "neighbour": 0.0}
        t0 = time.perf_counter()
        bar = tqdm(range(steps), desc=f"drasclr epoch {epoch + 1}/{cfg.epochs}", leave=False)
        for step in bar:
            views = draw_views(scans, neighbours, [anchors[j] for j in order[step * batch : (step + 1) * batch]],
                               patch, generator).to(device)
            with autocast_for(device):
                losses = training_step(model, queue, views, tau=cfg.drasclr_tau, beta=cfg.drasclr_beta,
                                       momentum=cfg.drasclr_momentum)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()
            for name in sums:
                sums[name] += float(losses[name].detach())
            bar.set_postfix(loss=f"{float(losses['loss'].detach()):.3f}")
        seconds = time.perf_counter() - t0
        row = {"epoch": epoch + 1, **{k: v / steps for k, v in sums.items()}, "lr": lr,
               "patches_per_s": steps * batch / seconds}
        history.append(row)
        LOG.info("drasclr epoch %d: loss %.4f (local %.4f, neighbour %.4f), lr %.2e, %.1f patches/s",
                 epoch + 1, row["loss"], row["local"], row["neighbour"], lr, row["patches_per_s"])
        _save_checkpoint(ckpt, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "queue": queue.state_dict(),
            "generator": generator.get_state(), "torch_rng": torch.get_rng_state(), "epoch": epoch + 1,
            "history": history,
        })
        _write_log(out / LOG_CSV, history)
    return model


def _cache_key(path: Path, spec: PatchSpec) -> str:
    text = json.dumps({"path": str(Path(path).resolve()), "spec": asdict(spec)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cached_plan(record, spec: PatchSpec, cache: Path) -> ScanPatches:
    """Read, mask and plan one scan, or load that plan from ``cache`` (the region memory-mapped)."""
    from clearct.io import read_ct

    stem = cache / f"{record.scan_id}-{_cache_key(record.path, spec)}"
    region_file, meta_file = stem.with_suffix(".npy"), stem.with_suffix(".npz")
    if not (region_file.exists() and meta_file.exists()):
        scan = plan_patches(read_ct(record.path), spec)
        with atomic_path(region_file, suffix=".npy") as tmp:
            np.save(tmp, scan.region)
        fields = {k: v for k, v in asdict(scan).items() if k != "region"}
        with atomic_path(meta_file, suffix=".npz") as tmp:
            np.savez(tmp, **{k: np.asarray(v) for k, v in fields.items()})
    meta = np.load(meta_file)
    return ScanPatches(
        region=np.load(region_file, mmap_mode="r"),
        spacing_mm=tuple(float(s) for s in meta["spacing_mm"]),
        origin=meta["origin"],
        centers_vox=meta["centers_vox"],
        center_mm=meta["center_mm"],
        loc=meta["loc"],
        slice_index=meta["slice_index"],
        mask_kind=str(meta["mask_kind"]),
        scan_id=record.scan_id,
        patient_id=record.patient_id,
    )


def run_drasclr(cfg) -> int:
    """``clearct pretrain --method drasclr``: plan patches per scan (cached), train, export the encoder."""
    from clearct.common.runs import start_run
    from clearct.encoders import save_encoder_run
    from clearct.io import read_scans_table

    out = start_run(cfg.out, "pretrain", cfg)
    enc_spec, patch = specs_from_config(cfg)
    scans, skipped = [], []
    for record in tqdm(read_scans_table(cfg.scans), desc="drasclr: masks and patch grids"):
        try:
            scan = cached_plan(record, patch, out / "cache")
            if len(scan) <= cfg.drasclr_neighbours:
                raise ClearctError(f"only {len(scan)} patches in the {scan.mask_kind} mask", record.path)
        except (ClearctError, ValueError, OSError) as exc:
            message = str(exc) if isinstance(exc, ClearctError) else f"{record.path}: {exc}"
            LOG.warning("drasclr: skipping scan %s: %s", record.scan_id, message)
            skipped.append(record.scan_id)
            continue
        scans.append(scan)
    if not scans:
        raise ClearctError("no scan gave DrasCLR patches (see the log for each scan)", cfg.scans)
    model = train_drasclr(scans, cfg)
    encoder = model.encoder_q.cpu().eval()
    patches = [len(s) for s in scans]
    info = {
        **encoder.info(),
        "method": "drasclr",
        "instance_kind": encoder.instance_kind,
        "training": cfg.model_dump(mode="json"),
        "data": {"scans": len(scans), "skipped": skipped, "patches": int(sum(patches)),
                 "lung_masks": sum(s.mask_kind == "lung" for s in scans)},
    }
    save_encoder_run(out, encoder, arch="drasclr", windows=[(patch.window_name, *patch.window)], info=info)
    LOG.info("drasclr: exported the encoder to %s", out)
    return 0
