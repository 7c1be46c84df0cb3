"""``clearct extract``: every scan of a cohort → ``OUT/<scan_id>.h5``, resumable, sharded under torchrun.

Flow per rank: its shard of scans.csv (``RANK``/``WORLD_SIZE``) → skip the scans whose valid feature file has the
same encoder, weights, windows and image size → read the next scans in threads while the current one is rendered
and embedded → write each file atomically. A scan that fails (missing path, unreadable file, a write that fails)
gets one line on the terminal and in the log and a row in ``failures.csv``; the rest go on, and the exit code is 1
when any failed. Temporary files left by a killed run are removed when the same command runs again.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

import torch
from tqdm import tqdm

from clearct.common import compute
from clearct.common.atomic import atomic_write_text, remove_leftovers
from clearct.common.device import resolve_device
from clearct.common.errors import ClearctError
from clearct.common.failures import Failures
from clearct.common.prefetch import read_ahead
from clearct.common.runs import start_run
from clearct.config import ExtractConfig
from clearct.encoders.embed import embed_volume, feature_windows, prepare_encoder
from clearct.encoders.registry import encoder_info
from clearct.io import read_scans_table
from clearct.io.features import read_features, write_features

LOG = logging.getLogger("clearct")


@dataclass
class Summary:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    slices: int = 0
    seconds: float = 0.0
    failures: list[dict[str, str]] = field(default_factory=list)
    random_init: bool = False  # the encoder has no weights: the features are a random-feature baseline
    warnings: list[str] = field(default_factory=list)

    def merge(self, other: Summary) -> None:
        self.done += other.done
        self.skipped += other.skipped
        self.failed += other.failed
        self.slices += other.slices
        self.seconds = max(self.seconds, other.seconds)  # ranks run side by side
        self.failures += other.failures
        self.random_init = self.random_init or other.random_init
        self.warnings += [w for w in other.warnings if w not in self.warnings]

    @property
    def slices_per_s(self) -> float:
        return self.slices / self.seconds if self.seconds > 0 else 0.0


def shard_of_env() -> tuple[int, int]:
    """(rank, world size) from torchrun's ``RANK``/``WORLD_SIZE``; (0, 1) outside torchrun."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if not 0 <= rank < world:
        raise ClearctError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return rank, world


def is_done(path: Path, expected: dict[str, object], overwrite: bool) -> bool:
    """True when ``path`` is a valid feature file made with the ``expected`` settings.

    A missing or unreadable file (e.g. from a crash before the atomic rename existed) is recomputed; a valid
    file made with other settings is an error unless ``overwrite``, so results of two encoders never mix.
    """
    if not path.exists():
        return False
    try:
        have = read_features(path, load_feats=False)
    except ClearctError as exc:
        LOG.warning("recomputing %s", exc)
        return False
    found = {
        "encoder": have.encoder,
        "weights_sha256": have.weights_sha256,
        "windows": [list(w) for w in have.windows],
        "image_size": have.image_size,
    }
    diff = [f"{k} {found[k]!r} (wanted {expected[k]!r})" for k in expected if found[k] != expected[k]]
    if diff and not overwrite:
        raise ClearctError(
            f"exists with other settings: {'; '.join(diff)}; use --overwrite to recompute it", path
        )
    return not diff


def run_extract(cfg: ExtractConfig) -> int:
    """Embed every scan of ``cfg.scans`` with ``cfg.encoder``; returns 1 when any scan failed, else 0."""
    from clearct.encoders import create_encoder
    from clearct.encoders.random_init import check_baseline_weights, random_init_warning
    from clearct.io import read_scan
    from clearct.preprocess import parse_windows

    check_baseline_weights(cfg.encoder, cfg.weights, cfg.random_init)
    rank, world = shard_of_env()
    # the inputs are checked before the run folder exists: a refused command leaves nothing behind
    records = read_scans_table(cfg.scans)[rank::world]
    device = resolve_device(cfg.device)
    windows = parse_windows(cfg.windows)
    encoder = prepare_encoder(create_encoder(cfg.encoder, weights=cfg.weights, image_size=cfg.image_size,
                                             allow_resize=cfg.allow_resize).to(device).eval())
    own = encoder_info(encoder)
    expected: dict[str, object] = {
        "encoder": own.encoder_name,
        "weights_sha256": own.weights_sha256,
        "windows": [list(w) for w in feature_windows(encoder, windows)],
        "image_size": own.input_size,
    }
    folder = Path(cfg.out)  # feature files of other settings are refused before config.yaml is rewritten
    todo = [r for r in records if not is_done(folder / f"{r.scan_id}.h5", expected, cfg.overwrite)]
    out = start_run(cfg.out, "extract", cfg)
    _set_cpu_threads(device)
    LOG.info(
        "rank %d/%d: %d scans, encoder %s (weights %s), device %s",
        rank,
        world,
        len(records),
        expected["encoder"],
        expected["weights_sha256"],
        device,
    )

    summary = Summary()
    flops = compute.FlopSample()  # the first scan counted, its FLOPs per row applied to every row (compute.json)
    warning = random_init_warning(encoder, "extract")
    if warning:
        summary.random_init = True
        summary.warnings.append(warning)
    remove_leftovers(out, [f"{r.scan_id}.h5" for r in records], suffix=".h5.tmp")  # from a killed run
    failures = Failures("extract")
    summary.skipped = len(records) - len(todo)
    start = time.perf_counter()
    bar = tqdm(
        total=len(todo), desc=f"extract[{rank}]" if world > 1 else "extract", unit="scan", disable=None
    )
    for record, volume in read_ahead(lambda r: read_scan(r, png_values=cfg.png_values), todo, cfg.workers):
        try:
            if isinstance(volume, Exception):
                raise volume
            feats = flops.run(embed_volume, volume, encoder, windows, batch_size=cfg.batch_size, device=device)
            feats.scan_id, feats.patient_id = record.scan_id, record.patient_id
            write_features(out / f"{record.scan_id}.h5", feats)
        except Exception as exc:  # this scan failed; the rest go on
            failures.add(record.scan_id, record.path, exc)
        else:
            LOG.info("rank %d wrote %s (%d slices)", rank, record.scan_id, volume.hu.shape[0])
            summary.done += 1
            summary.slices += volume.hu.shape[0]
        bar.update()
    bar.close()
    summary.seconds = time.perf_counter() - start
    compute.finish_run(out, flops=flops.total, steps=flops.units, device=device, scans=summary.done,
                       file="compute.json" if rank == 0 else f"compute.rank{rank}.json")
    summary.failed, summary.failures = len(failures), failures.rows
    return _finish(out, summary, rank, world)


def _finish(out: Path, summary: Summary, rank: int, world: int) -> int:
    """Merge the ranks' summaries (gloo under torchrun), write failures.csv and the summary, return the exit code."""
    parts = _gather(summary, world)
    suffix = ""
    if parts is None:  # sharded without a process group: each rank reports its own shard
        parts, suffix = [summary], f".rank{rank}"
    total = Summary()
    for part in parts:
        total.merge(part)
    if rank == 0 or suffix:
        failures = Failures("extract")
        failures.extend(total.failures)
        listed = failures.write(out / f"failures{suffix}.csv")
        report = {**asdict(total), "slices_per_s": round(total.slices_per_s, 3), "world_size": world}
        atomic_write_text(out / f"extract_summary{suffix}.json", json.dumps(report, indent=2) + "\n")
        line = (
            f"extract: {total.done} done, {total.skipped} skipped, {total.failed} failed; "
            f"{total.slices} slices in {total.seconds:.1f} s ({total.slices_per_s:.2f} slices/s)"
        )
        LOG.info(line)
        print(line + (f"; failures {failures.listing(listed)}" if total.failed else ""))
        for warning in total.warnings:  # repeated last, where a user looks when the run ends
            print(f"clearct extract: warning: {warning}", file=sys.stderr)
    return 1 if total.failed else 0


def _gather(summary: Summary, world: int) -> list[Summary] | None:
    if world == 1:
        return [summary]
    import torch.distributed as dist

    if not dist.is_available() or "MASTER_ADDR" not in os.environ:
        return None
    owned = not dist.is_initialized()
    if owned:  # the rendezvous happens here, at the end: ranks may finish their shards far apart
        dist.init_process_group("gloo", timeout=timedelta(days=1))
    parts: list[Summary | None] = [None] * world
    dist.all_gather_object(parts, summary)
    if owned:
        dist.destroy_process_group()
    return parts  # type: ignore[return-value]


def _set_cpu_threads(device: torch.device) -> None:
    """One intra-op thread per core for the forward (split between local ranks); torchrun's OMP_NUM_THREADS wins."""
    if device.type != "cpu" or "OMP_NUM_THREADS" in os.environ:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", 1))))
