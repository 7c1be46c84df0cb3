"""One scan in memory → its ScanFeatures through a frozen registry encoder: the one interface that extraction and
predict call for every encoder.

Rows follow the feature-file contract: ordered by (slice_index, window), N = slices × windows for a 2D encoder
(windowed slices in bounded chunks); a 3D encoder (``is_3d``) gives one row with slice_index −1. An encoder whose
instances are neither (DrasCLR's patches) brings its own ``embed_scan`` and ``feature_windows`` methods.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from clearct.common.device import autocast_for, channels_last, resolve_device
from clearct.common.prefetch import background
from clearct.encoders.registry import describe, encoder_info
from clearct.io.features import ScanFeatures
from clearct.io.volume import CTVolume
from clearct.preprocess import Window, parse_windows, render_slices


def feature_windows(encoder: torch.nn.Module, windows: Sequence[Window]) -> list[tuple[str, float, float]]:
    """The windows a feature file records: the requested ones, the encoder's own, or a 3D encoder's HU range."""
    own = getattr(encoder, "feature_windows", None)
    if own is not None:
        return own(windows)
    hu_window = getattr(encoder, "hu_window", None)
    if getattr(encoder, "is_3d", False) and hu_window is not None:
        lo, hi = hu_window
        return [("volume", float(lo), float(hi))]
    return [(w.name, float(w.lo), float(w.hi)) for w in windows]


def render_chunks(
    hu: np.ndarray, windows: Sequence[Window], encoder: torch.nn.Module, rows: int
) -> Iterator[torch.Tensor]:
    """Rendered model inputs of about ``rows`` rows each, (slices × windows, 3, S, S), slice-major.

    Only one chunk exists at a time per consumer step, so a 1,000-slice scan never holds all its slices at
    the encoder's input size at once.
    """
    per_chunk = max(1, rows // len(windows))
    own = encoder_info(encoder)
    for z0 in range(0, hu.shape[0], per_chunk):
        x = render_slices(hu[z0 : z0 + per_chunk], windows, own.input_size, mean=own.mean, std=own.std)
        yield x.reshape(-1, *x.shape[2:])


def prepare_encoder(encoder: torch.nn.Module) -> torch.nn.Module:
    """A 2D encoder in channels-last memory format for its frozen forwards (1.8× resnet_tiny's inference on 2 CPU
    cores, benchmarks/RESULTS.md); :func:`forward_rows` then feeds it channels-last batches."""
    if not getattr(encoder, "is_3d", False):
        channels_last(encoder)
        describe(encoder, channels_last=True)
    return encoder


def forward_rows(encoder: torch.nn.Module, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Frozen forward of one batch: inference mode, bf16 autocast on CUDA, float32 result on the CPU."""
    x = x.to(device, non_blocking=True)
    if getattr(encoder, "channels_last", False):
        x = channels_last(x)
    with torch.inference_mode(), autocast_for(device):
        out = encoder(x)
    return out.float().cpu()


def embed_volume(
    volume: CTVolume,
    encoder: torch.nn.Module,
    windows: Sequence[Window] | str | list[str],
    *,
    batch_size: int = 64,
    device: torch.device | str | None = None,
) -> ScanFeatures:
    """Embed every slice of ``volume`` once per window (or the whole volume for a 3D encoder, or the instances an
    encoder's own ``embed_scan`` chooses).

    ``encoder`` must already sit on ``device`` in eval mode (``device=None`` uses the encoder's own device).
    Rendering of the next chunk runs in a background thread while the current chunk goes through the encoder.
    """
    device = _encoder_device(encoder) if device is None else resolve_device(str(device))
    own = getattr(encoder, "embed_scan", None)
    if own is not None:
        feats = own(volume, batch_size=batch_size, device=device)
        feats.attrs = {**volume.provenance(), **feats.attrs}
        return feats
    windows = parse_windows(windows)
    z = volume.hu.shape[0]
    if getattr(encoder, "is_3d", False):
        # a 3D encoder's own method; nn.Module's __getattr__ types it as Tensor | Module
        feats = forward_rows(encoder, encoder.prepare_volume(volume), device)  # type: ignore[operator]
        slice_index = np.array([-1], np.int32)
        window = np.zeros(1, np.int8)
        z_mm = np.array([np.mean(volume.z_mm)], np.float32)
    else:
        chunks = background(render_chunks(volume.hu, windows, encoder, batch_size))
        feats = torch.cat([forward_rows(encoder, x, device) for x in chunks])
        n_w = len(windows)
        slice_index = np.repeat(np.arange(z, dtype=np.int32), n_w)
        window = np.tile(np.arange(n_w, dtype=np.int8), z)
        z_mm = np.repeat(volume.z_mm.astype(np.float32), n_w)
    own_info = encoder_info(encoder)
    if feats.shape[0] != len(slice_index):
        raise ValueError(f"{own_info.encoder_name} gave {feats.shape[0]} rows for {len(slice_index)} inputs")
    return ScanFeatures(
        feats=feats.numpy(),
        slice_index=slice_index,
        z_mm=z_mm,
        window=window,
        scan_id=volume.scan_id,
        patient_id=volume.patient_id,
        encoder=own_info.encoder_name,
        weights_sha256=own_info.weights_sha256,
        image_size=own_info.input_size,
        windows=feature_windows(encoder, windows),
        attrs=volume.provenance(),
    )


def _encoder_device(encoder: torch.nn.Module) -> torch.device:
    param = next(encoder.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
