"""The DrasCLR 3D CNN encoder: every convolution is a location-conditioned CondConv3d.

Layout follows the paper's encoder (widths configurable): a stem (conv, conv stride 2), one block per further
width (conv, conv, conv stride 2), a tail (conv to 2× width, conv stride 2 to ``embed_dim``), each conv followed by
BatchNorm and ELU, then global average pooling → the patch representation h (B, embed_dim). With 32³ patches and
widths 8-16-32-64 this is the authors' network (their 1³ flatten equals the pooling). The MoCo projection head is
part of training only (``train.py``); the exported encoder is this trunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from clearct.common.device import autocast_for
from clearct.encoders.drasclr.condconv import CondConv3d
from clearct.encoders.drasclr.patches import PatchSpec, plan_patches, sample_patches
from clearct.io.features import ScanFeatures
from clearct.io.volume import CTVolume


@dataclass(frozen=True)
class EncoderSpec:
    """Network shape: ``channels`` (stem width first), ``embed_dim`` of h, ``num_experts`` K per CondConv."""

    channels: tuple[int, ...] = (8, 16, 32, 64)
    embed_dim: int = 128
    num_experts: int = 8

    def to_dict(self) -> dict:
        return {**asdict(self), "channels": list(self.channels)}


class _Unit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, experts: int):
        super().__init__()
        self.conv = CondConv3d(cin, cout, 3, stride=stride, num_experts=experts, bias=False)
        self.bn = nn.BatchNorm3d(cout)
        self.act = nn.ELU(inplace=True)

    def forward(self, x: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x, loc)))


def _layout(spec: EncoderSpec) -> list[tuple[int, int, int]]:
    """(in, out, stride) of every unit."""
    c = spec.channels
    units = [(1, c[0], 1), (c[0], c[0], 2)]
    for cin, cout in zip(c[:-1], c[1:]):
        units += [(cin, cout, 1), (cout, cout, 1), (cout, cout, 2)]
    return units + [(c[-1], 2 * c[-1], 1), (2 * c[-1], spec.embed_dim, 2)]


class DrasCLREncoder(nn.Module):
    """(B, 1, P, P, P) patches in [−1, 1] and (B, 3) locations → (B, embed_dim) patch embeddings.

    Its instances are patches, not slices: :meth:`embed_scan` embeds a scan's patch grid (one feature row per
    patch) and :meth:`feature_windows` names its own lung window, the two methods through which
    :func:`clearct.encoders.embed.embed_volume` lets an encoder choose its instances.
    """

    instance_kind = "patch3d"
    is_3d = True

    def __init__(self, spec: EncoderSpec | None = None, patch: PatchSpec | None = None):
        super().__init__()
        spec, patch = spec or EncoderSpec(), patch or PatchSpec()
        self.spec, self.patch = spec, patch
        self.units = nn.ModuleList(_Unit(i, o, s, spec.num_experts) for i, o, s in _layout(spec))
        self.embed_dim = spec.embed_dim
        self.input_size = patch.patch_size
        self.mean = (0.0, 0.0, 0.0)  # inputs are windowed straight to [−1, 1]; no further normalisation
        self.std = (1.0, 1.0, 1.0)
        self.encoder_name = "drasclr"
        self.weights_sha256 = "random-init"

    def forward(self, x: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        for unit in self.units:
            x = unit(x, loc)
        return x.mean(dim=(2, 3, 4))

    def feature_windows(self, windows: Sequence[object] = ()) -> list[tuple[str, float, float]]:
        """The one HU window its patches are cut in (the requested slice windows do not apply)."""
        return [(self.patch.window_name, float(self.patch.window[0]), float(self.patch.window[1]))]

    @torch.no_grad()
    def embed_scan(self, volume: CTVolume, *, batch_size: int = 64,
                   device: torch.device | str = "cpu") -> ScanFeatures:
        """Mask the scan, cut the patch grid, and embed every patch (no augmentation, eval mode).

        Rows are the patches in grid order (z first), so ``slice_index`` (the slice of the patch centre) is
        non-decreasing as the feature-file contract asks; ``window`` is 0 for the single lung window; the extra
        dataset ``patch_center_mm`` (N, 3) holds (patient z, y, x) in mm and ``patch_loc`` (N, 3) the normalised
        location, so attention can be drawn over patch position.
        """
        spec, device = self.patch, torch.device(device)
        scan = plan_patches(volume, spec)
        self.to(device).eval()
        feats = []
        starts = range(0, len(scan), batch_size)
        for start in tqdm(starts, desc=f"{volume.scan_id or 'scan'}: patches", leave=False, disable=len(starts) < 2):
            index = np.arange(start, min(start + batch_size, len(scan)))
            x = sample_patches(scan, index, spec).to(device)
            loc = torch.from_numpy(scan.loc[index]).to(device)
            with autocast_for(device):
                feats.append(self(x, loc).float().cpu())
        return ScanFeatures(
            feats=torch.cat(feats).numpy().astype(np.float32),
            slice_index=scan.slice_index,
            z_mm=scan.center_mm[:, 0],
            window=np.zeros(len(scan), dtype=np.int8),
            scan_id=volume.scan_id,
            patient_id=volume.patient_id,
            encoder=self.encoder_name,
            weights_sha256=self.weights_sha256,
            image_size=spec.patch_size,
            windows=self.feature_windows(),
            extra={"patch_center_mm": scan.center_mm, "patch_loc": scan.loc},
            attrs={"instance_kind": "patch3d", "patch_voxel_mm": spec.voxel_mm, "patch_grid_mm": spec.grid_mm,
                   "patch_mask": scan.mask_kind},
        )

    def info(self) -> dict:
        """What ``create_encoder`` needs to rebuild this network (stored in encoder.json)."""
        return {"encoder": self.spec.to_dict(), "patch": {**asdict(self.patch), "window": list(self.patch.window)}}


def encoder_from_info(info: dict) -> DrasCLREncoder:
    """Rebuild the (untrained) network from :meth:`DrasCLREncoder.info`."""
    enc = dict(info.get("encoder", {}))
    patch = dict(info.get("patch", {}))
    if "channels" in enc:
        enc["channels"] = tuple(int(c) for c in enc["channels"])
    if "window" in patch:
        patch["window"] = tuple(float(w) for w in patch["window"])
    return DrasCLREncoder(EncoderSpec(**enc), PatchSpec(**patch))


# Tiny configuration for CPU tests: 16³ patches of 2 mm, two widths, four experts.
TEST_ENCODER = EncoderSpec(channels=(4, 8), embed_dim=16, num_experts=4)
TEST_PATCH = PatchSpec(patch_size=16, voxel_mm=2.0, grid_mm=16.0)
