"""``clearct pretrain`` → :func:`run_pretrain`: MoCo v3 / LECL / supervised-ceiling training loop, checkpoints,
resume, export, torchrun.

Run folder: ``config.yaml`` + ``pretrain.log`` (start_run), ``slice-cache/`` (unless ``--cache-dir``),
``checkpoint.pt`` (after every epoch, atomic: model incl. momentum branch and heads, optimizer, epoch, step, RNG
states), ``pretrain-log.csv`` (epoch, step, loss, lr, momentum, images/s), TensorBoard events when tensorboard is
installed, and at the end ``encoder.safetensors`` + ``encoder.json`` (the query trunk) through
:func:`clearct.encoders.save_encoder_run`; with ``--snapshot-steps`` also ``snapshots/step-<n>/`` (the same two
files after step n). ``--method drasclr`` is handed to :mod:`clearct.pretrain.drasclr`.
"""

from __future__ import annotations

import csv
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from clearct import __version__
from clearct.common import compute
from clearct.common.atomic import atomic_path, remove_leftovers
from clearct.common.device import autocast_for, channels_last, resolve_device, training_threads
from clearct.common.errors import ClearctError
from clearct.config import PretrainConfig
from clearct.encoders.registry import encoder_info
from clearct.io.tables import LesionBox, ScanRecord
from clearct.pretrain.cache import SliceIndex
from clearct.pretrain.distributed import DistInfo, convert_global_batchnorm, init_distributed, is_distributed
from clearct.pretrain.losses import Variant
from clearct.pretrain.moco import MoCo
from clearct.pretrain.schedules import learning_rate, momentum

LOG = logging.getLogger("clearct")
CHECKPOINT = "checkpoint.pt"
LOG_CSV = "pretrain-log.csv"
SNAPSHOTS = "snapshots"
LOG_FIELDS = ["epoch", "step", "loss", "lr", "momentum", "images_per_s"]
# settings a resumed run must share with the checkpoint (the others — epochs, workers, device … — may change)
RESUME_KEYS = ("arch", "method", "lam", "variant", "batch_size", "image_size", "windows", "tau", "proj_dim",
               "mlp_dim", "seed", "lesion_share", "lesion_crop_scale")


@dataclass(frozen=True)
class LossSpec:
    """The loss options of :meth:`MoCo.forward` (LECL λ and variant; λ = 0 and no lesion crops for plain MoCo)."""

    lam: float = 0.0
    variant: Variant = "paper"
    include_own_positive: bool = False


def build_moco(trunk: nn.Module, *, dim: int, mlp_dim: int, tau: float, distributed: bool) -> MoCo:
    """MoCo v3 around ``trunk``; under torchrun every BatchNorm uses the statistics of the global batch."""
    # any trunk with an int embed_dim (not only a registry encoder); nn.Module types it Tensor | Module
    model = MoCo(trunk, int(trunk.embed_dim), dim=dim, mlp_dim=mlp_dim, tau=tau)  # type: ignore[arg-type]
    return convert_global_batchnorm(model) if distributed else model


def build_model(cfg: PretrainConfig, trunk: nn.Module, index: SliceIndex, *, distributed: bool) -> nn.Module:
    """The training module of ``cfg.method``: MoCo v3 (moco, lecl) or the supervised slice classifier."""
    assert cfg.mlp_dim is not None, "resolve_defaults fills it"
    if cfg.method != "supervised":
        return build_moco(trunk, dim=cfg.proj_dim, mlp_dim=cfg.mlp_dim, tau=cfg.tau, distributed=distributed)
    from clearct.pretrain.supervised import SliceClassifier, positive_weights

    assert index.targets is not None and index.annotated is not None, "build_index sets both"
    annotated = torch.from_numpy(index.targets[index.annotated])
    model = SliceClassifier(trunk, encoder_info(trunk).embed_dim, len(index.label_names),
                            positive_weights(annotated))
    return convert_global_batchnorm(model) if distributed else model


def _announce(cfg: PretrainConfig, data: dict, steps_per_epoch: int) -> None:
    """The resolved recipe, printed at the start (defaults that depend on the cohort are easy to miss)."""
    assert cfg.batch_size is not None, "resolve_defaults fills it"
    peak = cfg.lr * cfg.batch_size / 256
    line = (f"pretrain: {cfg.method} {cfg.arch} at {cfg.image_size} px on {data['training_slices']} slices "
            f"({data['lesion_slices']} key slices); batch {cfg.batch_size}, {steps_per_epoch} steps/epoch × "
            f"{cfg.epochs} epochs = {steps_per_epoch * cfg.epochs} steps; lr {peak:.3g} after {cfg.warmup_epochs:g} "
            f"warm-up epochs")
    if cfg.method != "supervised":
        line += f"; heads {cfg.mlp_dim}→{cfg.proj_dim}"
    if cfg.lesion_share:
        line += f"; {cfg.lesion_share:.0%} of samples from annotated slices"
    LOG.info(line)


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel under torchrun (gradients averaged over ranks), the model itself otherwise."""
    if not is_distributed():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x1: torch.Tensor, x2: torch.Tensor,
    extra: torch.Tensor | None, *, lr: float, m: float, loss_spec: LossSpec, device: torch.device,
    amp: bool = True,
) -> torch.Tensor:
    """One optimisation step at learning rate ``lr`` and key-encoder momentum ``m``; returns this rank's loss.

    ``extra`` is the LECL lesion mask (MoCo: None) or the supervised ceiling's slice targets."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    x1, x2 = channels_last(x1), channels_last(x2)
    with autocast_for(device, enabled=amp):
        loss = model(x1, x2, m, extra, lam=loss_spec.lam, variant=loss_spec.variant,
                     include_own_positive=loss_spec.include_own_positive)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def _rng_state() -> dict:
    legacy = np.random.get_state()
    assert isinstance(legacy, tuple)  # legacy=True, the default: the tuple form
    kind, keys, pos, has_gauss, cached = legacy
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [kind, keys.tolist(), pos, has_gauss, cached]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(tuple(tuple(s) if isinstance(s, list) else s for s in state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, *, epoch: int, step: int,
                    settings: dict) -> None:
    """Everything needed to continue after ``epoch`` completed epochs, written atomically."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "step": step,
             "rng": _rng_state(), "settings": settings, "clearct_version": __version__}
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    settings: dict) -> tuple[int, int]:
    """Restore a checkpoint (weights_only); returns (completed epochs, global step)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise ClearctError(f"cannot read the checkpoint: {exc}", path) from exc
    differ = [k for k in RESUME_KEYS if state["settings"].get(k) != settings.get(k)]
    if differ:
        pairs = ", ".join(f"{k}: {state['settings'].get(k)!r} → {settings.get(k)!r}" for k in differ)
        raise ClearctError(f"--resume with different settings ({pairs})", path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    _set_rng_state(state["rng"])
    return int(state["epoch"]), int(state["step"])


class MetricsLog:
    """``pretrain-log.csv`` (+ TensorBoard when installed), kept consistent with the checkpoint on resume."""

    def __init__(self, out: Path, *, resume_step: int | None):
        self.path = out / LOG_CSV
        rows = []
        if resume_step is not None and self.path.exists():
            with open(self.path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= resume_step]
        with atomic_path(self.path, suffix=".csv") as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, LOG_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb: SummaryWriter | None = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            self.tb = None

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, LOG_FIELDS).writerow(row)
        if self.tb is not None:
            for key in ("loss", "lr", "momentum", "images_per_s"):
                self.tb.add_scalar(f"pretrain/{key}", row[key], row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _mean_over_ranks(x: torch.Tensor) -> float:
    if is_distributed():
        x = x.clone()
        dist.all_reduce(x)
        x /= dist.get_world_size()
    return float(x)


def _settings(cfg: PretrainConfig) -> dict:
    return cfg.model_dump(mode="json", include=set(RESUME_KEYS))


def _read_tables(cfg: PretrainConfig) -> tuple[list[ScanRecord], list[LesionBox]]:
    """scans.csv, and lesions.csv for the methods that need it."""
    from clearct.io import read_lesions_table, read_scans_table

    records = read_scans_table(cfg.scans)
    lesions: list[LesionBox] = []
    if cfg.method in ("lecl", "supervised"):
        if cfg.lesions is None:
            raise ClearctError(f"--method {cfg.method} needs --lesions lesions.csv (or use --method moco)", cfg.scans)
        lesions = read_lesions_table(cfg.lesions)
    return records, lesions


def _build_data(cfg: PretrainConfig, out: Path, info: DistInfo, encoder: nn.Module, records: list[ScanRecord],
                lesions: list[LesionBox]):
    """Slice cache (built by rank 0, reused by the others), slice index with lesion boxes, dataset, loader.

    Returns the windows, the loader, a data summary and ``cfg`` with the size-dependent defaults resolved."""
    from clearct.io import read_scan
    from clearct.preprocess import parse_windows
    from clearct.pretrain.cache import build_cache, build_index
    from clearct.pretrain.data import PretrainSlices, make_loader
    from clearct.pretrain.views import ViewSpec

    windows = parse_windows(cfg.windows)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else out / "slice-cache"
    if info.is_main:
        cache = build_cache(records, cache_dir, reader=partial(read_scan, png_values=cfg.png_values),
                            fmt=cfg.cache_format)
    if is_distributed():
        dist.barrier()
    if not info.is_main:
        cache = build_cache(records, cache_dir, reader=partial(read_scan, png_values=cfg.png_values), progress=False,
                            fmt=cfg.cache_format)
    index = build_index(cache, lesions, source=cfg.lesions or "")
    if cfg.method == "supervised":
        assert index.annotated is not None, "build_index sets it"
        rows, emphasis = np.flatnonzero(index.annotated), index.covered_rows
        if not len(emphasis):
            raise ClearctError("--method supervised: no lesion of lesions.csv matches a cached slice", cfg.lesions)
    else:
        rows, emphasis = np.arange(len(index)), index.lesion_rows
    own = encoder_info(encoder)
    cfg = resolve_defaults(cfg, slices=len(rows), embed_dim=own.embed_dim)
    assert cfg.batch_size is not None and cfg.image_size is not None, "resolved above and in run_pretrain"
    assert cfg.method != "drasclr", "run_pretrain hands DrasCLR to its own trainer"
    if cfg.batch_size % info.world_size:
        raise ClearctError(f"--batch-size {cfg.batch_size} is not divisible by {info.world_size} ranks")
    if len(rows) < cfg.batch_size:
        what = "annotated slices" if cfg.method == "supervised" else "slices"
        raise ClearctError(f"the cohort has {len(rows)} {what}, fewer than one batch of {cfg.batch_size}", cfg.scans)
    spec = ViewSpec(size=cfg.image_size, windows=tuple((w.lo, w.hi) for w in windows), crop_min=cfg.crop_min,
                    lesion_scale=None if not cfg.lesion_crop_scale else (cfg.lesion_crop_scale[0],
                                                                             cfg.lesion_crop_scale[1]),
                    mean=own.mean, std=own.std, window_jitter=cfg.window_jitter)
    dataset = PretrainSlices(cache, index, spec, mode=cfg.method, seed=cfg.seed, device_views=cfg.views == "device")
    loader = make_loader(dataset, local_batch=cfg.batch_size // info.world_size, rank=info.rank,
                         world_size=info.world_size, workers=cfg.workers, seed=cfg.seed,
                         pin_memory=torch.cuda.is_available(), rows=rows,
                         emphasis=emphasis if cfg.method != "moco" else None, share=cfg.lesion_share)
    summary = {"scans": len(cache.scans), "skipped_scans": cache.skipped, "slices": len(index),
               "training_slices": len(rows), "lesion_slices": index.num_lesion_slices,
               "lesion_covered_slices": len(index.covered_rows), "labels": list(index.label_names),
               "cache_dir": str(cache_dir)}
    return windows, loader, summary, cfg, index


PAPER_WARMUP_EPOCHS = 10.0
WARMUP_SHARE = 0.1  # the paper's 10 of 100 epochs: the default warm-up never takes more of a shorter run
PAPER_BATCH = 256


def resolve_defaults(cfg: PretrainConfig, *, slices: int, embed_dim: int) -> PretrainConfig:
    """Fill the size-dependent defaults left None: warm-up (the paper's 10 epochs, at most a tenth of the run),
    batch (256, halved until an epoch has ≥ 16 steps, at least 8) and the MoCo head width (16 × the encoder's
    width, at most MoCo v3's 4096). An explicit warm-up longer than the run is kept but warned about (one as long
    as the run reaches the base learning rate at its last step)."""
    update = {}
    if cfg.warmup_epochs is None:
        update["warmup_epochs"] = min(PAPER_WARMUP_EPOCHS, WARMUP_SHARE * cfg.epochs)
    elif cfg.warmup_epochs > cfg.epochs:
        LOG.warning("pretrain: --warmup-epochs %g > --epochs %d: the learning rate never reaches its base value "
                    "(lr × batch / 256) and ends at %.2g of it", cfg.warmup_epochs, cfg.epochs,
                    cfg.epochs / cfg.warmup_epochs)
    if cfg.batch_size is None:
        batch = PAPER_BATCH
        while batch > 8 and slices // batch < 16:
            batch //= 2
        update["batch_size"] = batch
    if cfg.mlp_dim is None:
        update["mlp_dim"] = min(4096, 16 * embed_dim)
    return cfg.model_copy(update=update)


def snapshot_dir(run: Path, step: int) -> Path:
    """The run folder of the encoder exported after optimizer step ``step`` (``--snapshot-steps``)."""
    return Path(run) / SNAPSHOTS / f"step-{step}"


def check_snapshots(steps: list[int], run: Path, *, total: int, done: int) -> None:
    """Refuse snapshot steps the run cannot export: beyond its ``total`` steps, or passed before this resumed
    invocation (``done`` steps) without an exported folder."""
    beyond = [n for n in steps if n > total]
    if beyond:
        raise ClearctError(f"--snapshot-steps {','.join(map(str, beyond))} lie beyond the run's {total} steps", run)
    missing = [n for n in steps if n <= done and not (snapshot_dir(run, n) / "encoder.json").is_file()]
    if missing:
        raise ClearctError(f"--snapshot-steps {','.join(map(str, missing))} were passed before this resume without "
                           f"a snapshot; train the run afresh (without its {CHECKPOINT}) to export them", run)


def run_pretrain(cfg: PretrainConfig) -> int:
    """``clearct pretrain``: MoCo v3, LECL or the supervised ceiling on the slices of ``--scans``; exports the
    (query) trunk to ``--out``."""
    if cfg.method == "drasclr" and cfg.snapshot_steps:
        raise ClearctError("--snapshot-steps: MoCo, LECL and the supervised ceiling only, not drasclr", cfg.out)
    if cfg.method == "drasclr":
        from clearct.pretrain.drasclr import run_drasclr

        return run_drasclr(cfg)
    from clearct.common.runs import start_run
    from clearct.encoders import create_encoder

    device = resolve_device(cfg.device)
    info = init_distributed(device.type)
    if device.type == "cuda" and info.world_size > 1:
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    try:
        # the inputs are checked before the run folder exists: a refused command leaves nothing behind
        records, lesions = _read_tables(cfg)
        torch.manual_seed(cfg.seed)
        encoder = create_encoder(cfg.arch, seed=cfg.seed, image_size=cfg.image_size)
        if getattr(encoder, "is_3d", False):
            raise ClearctError(f"--arch {cfg.arch} is a 3D encoder; MoCo v3 / LECL pretrain 2D slice encoders")
        out = start_run(cfg.out, "pretrain", cfg) if info.is_main else Path(cfg.out)
        if info.is_main:
            remove_leftovers(out, [CHECKPOINT], suffix=".pt")  # of a run killed while saving; checkpoint.pt is intact
        if cfg.image_size is None:
            cfg = cfg.model_copy(update={"image_size": encoder_info(encoder).input_size})
        windows, loader, data_summary, cfg, index = _build_data(cfg, out, info, encoder, records, lesions)
        model = channels_last(build_model(cfg, encoder, index, distributed=is_distributed()).to(device))
        _announce(cfg, data_summary, len(loader))
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=0.0, weight_decay=cfg.weight_decay)
        start_epoch, step = 0, 0
        if cfg.resume and (out / CHECKPOINT).exists():
            start_epoch, step = load_checkpoint(out / CHECKPOINT, model, optimizer, _settings(cfg))
            LOG.info("pretrain: resumed after epoch %d (step %d)", start_epoch, step)
        elif cfg.resume:
            LOG.info("pretrain: --resume but no %s yet, starting from scratch", CHECKPOINT)
        last = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, start_epoch + cfg.stop_after)
        total = cfg.epochs * len(loader)
        check_snapshots(cfg.snapshot_steps, out, total=total, done=step)
        about = {"method": cfg.method, "training": cfg.model_dump(mode="json"), "data": data_summary,
                 "steps": total, "world_size": info.world_size, "clearct_version": __version__}

        def snapshot(n: int) -> None:  # the weights after step n; the schedules are those of the whole run
            _export(snapshot_dir(out, n), model, cfg, windows, {**about, "snapshot_step": n})

        with training_threads(device.type == "cpu" and not is_distributed(), LOG.info, "pretrain"):
            loss = _train(cfg, model, optimizer, loader, info, device, out, start_epoch, last, step,
                          snapshot if info.is_main else None)
        assert cfg.batch_size is not None and cfg.image_size is not None, "resolved by _build_data"
        local = cfg.batch_size // info.world_size
        views = torch.zeros(local, 3, cfg.image_size, cfg.image_size, device=device)
        # the extra input of the step: no lesion mask for MoCo/LECL's probe, zero targets for the supervised head
        extra = torch.zeros(local, len(index.label_names), device=device) if cfg.method == "supervised" else None
        compute.finish_steps(out, model, lambda m: m(views, views, cfg.momentum, extra, lam=cfg.lam,
                                                     variant=cfg.variant),
                             steps=(last - start_epoch) * len(loader), device=device, processes=info.world_size,
                             write=info.is_main)  # compute.json: one step on zero views probed × the steps run
        finished_before = start_epoch == cfg.epochs and (out / "encoder.json").is_file()
        if finished_before:
            LOG.info("pretrain: all %d epochs were trained before; %s/encoder.json kept", cfg.epochs, out)
        elif info.is_main and last == cfg.epochs:
            _export(out, model, cfg, windows, {**about, "epochs_trained": cfg.epochs, "final_loss": loss})
            LOG.info("pretrain: exported the query encoder to %s", out)
        if is_distributed():
            dist.barrier()
    finally:
        if is_distributed():
            dist.destroy_process_group()
    return 1 if data_summary["skipped_scans"] else 0  # scans left out (listed above): the batch rule's exit code


def _export(folder: Path, model: nn.Module, cfg: PretrainConfig, windows: list, about: dict) -> None:
    """The query trunk of ``model`` as an encoder run folder (weights copied to the CPU; the model is left as it
    is, so training can go on after a snapshot)."""
    from clearct.encoders import save_encoder_run

    trunk = model.trunk
    assert isinstance(trunk, nn.Module), "MoCo and the supervised classifier hold the trunk"
    save_encoder_run(folder, trunk, arch=cfg.arch, windows=[(w.name, w.lo, w.hi) for w in windows], info=about)


def _train(cfg: PretrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader,
           info: DistInfo, device: torch.device, out: Path, start: int, stop: int, step: int,
           snapshot: Callable[[int], None] | None = None) -> float | None:
    from clearct.pretrain.data import EpochSampler
    from clearct.pretrain.views import render_batch

    assert cfg.batch_size is not None and cfg.warmup_epochs is not None, "resolved by _build_data"
    sampler = loader.sampler
    assert isinstance(sampler, EpochSampler), "make_loader's sampler"
    net = wrap_ddp(model, device)
    net.train()
    steps_per_epoch = len(loader)
    loss_spec = LossSpec(lam=cfg.lam if cfg.method == "lecl" else 0.0, variant=cfg.variant,
                         include_own_positive=cfg.lesion_own_positive)
    metrics = MetricsLog(out, resume_step=step) if info.is_main else None
    uses_extra = cfg.method in ("lecl", "supervised")  # the lesion mask / the slice targets
    spec = loader.dataset.spec  # type: ignore[attr-defined]
    last_loss = None
    for epoch in range(start, stop):
        sampler.set_epoch(epoch)
        bar = tqdm(loader, desc=f"pretrain epoch {epoch + 1}/{cfg.epochs}", disable=not info.is_main)
        tick = time.perf_counter()
        for i, (x1, x2, extra) in enumerate(bar):
            e = epoch + i / steps_per_epoch
            lr = learning_rate(e, base_lr=cfg.lr, batch_size=cfg.batch_size, epochs=cfg.epochs,
                               warmup_epochs=cfg.warmup_epochs)
            m = momentum(e, m0=cfg.momentum, epochs=cfg.epochs)
            if cfg.views == "device":  # x1: the int16 slices, x2: the pairs' decisions (pretrain/views.py)
                hu, params = x1.to(device, non_blocking=True), x2
                x1, x2 = (render_batch(hu, params[:, v], spec) for v in (0, 1))
            x1, x2 = x1.to(device, non_blocking=True), x2.to(device, non_blocking=True)
            extra = extra.to(device) if uses_extra else None
            loss = train_step(net, optimizer, x1, x2, extra, lr=lr, m=m, loss_spec=loss_spec, device=device,
                              amp=cfg.amp)
            step += 1
            if snapshot is not None and step in cfg.snapshot_steps:
                snapshot(step)
                LOG.info("pretrain: snapshot after step %d exported to %s", step, snapshot_dir(out, step))
            if step % cfg.log_every == 0 or i == steps_per_epoch - 1:
                last_loss = _mean_over_ranks(loss.float())
                now = time.perf_counter()
                rate = cfg.batch_size * (i + 1) / (now - tick)
                if metrics is not None:
                    metrics.write({"epoch": round(e + 1 / steps_per_epoch, 6), "step": step, "loss": last_loss,
                                   "lr": lr, "momentum": m, "images_per_s": round(rate, 2)})
                    bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.1f}")
        if info.is_main:
            save_checkpoint(out / CHECKPOINT, model, optimizer, epoch=epoch + 1, step=step, settings=_settings(cfg))
            LOG.info("pretrain: epoch %d/%d done, step %d, loss %s", epoch + 1, cfg.epochs, step, last_loss)
        if is_distributed():
            dist.barrier()
    if metrics is not None:
        metrics.close()
    return last_loss
