"""One embedding per DrasCLR patch of a scan, in the feature-file contract (instances = patches).

Rows are the patches in grid order (z first), so ``slice_index`` (the slice of the patch centre) is
non-decreasing as the contract asks; ``window`` is 0 for the single lung window; the extra dataset
``patch_center_mm`` (N, 3) holds (patient z, y, x) in mm and ``patch_loc`` (N, 3) the normalised location, so
attention can be drawn over patch position.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from clearct.common.device import autocast_for, resolve_device
from clearct.extract.h5 import ScanFeatures
from clearct.io.volume import CTVolume
from clearct.pretrain.drasclr.model import DrasCLREncoder
from clearct.pretrain.drasclr.patches import plan_patches, sample_patches


@torch.no_grad()
def embed_volume_patches(
    volume: CTVolume, encoder: DrasCLREncoder, *, batch_size: int = 64, device: str | torch.device | None = None
) -> ScanFeatures:
    """Mask the scan, cut the encoder's patch grid, and embed every patch (no augmentation, eval mode).

    ``device=None`` keeps the encoder where it is, as :func:`clearct.extract.embed_volume` does.
    """
    device = next(encoder.parameters()).device if device is None else resolve_device(str(device))
    spec = encoder.patch
    scan = plan_patches(volume, spec)
    encoder = encoder.to(device).eval()
    feats = []
    starts = range(0, len(scan), batch_size)
    for start in tqdm(starts, desc=f"{volume.scan_id or 'scan'}: patches", leave=False, disable=len(starts) < 2):
        index = np.arange(start, min(start + batch_size, len(scan)))
        x = sample_patches(scan, index, spec).to(device)
        loc = torch.from_numpy(scan.loc[index]).to(device)
        with autocast_for(device):
            feats.append(encoder(x, loc).float().cpu())
    return ScanFeatures(
        feats=torch.cat(feats).numpy().astype(np.float32),
        slice_index=scan.slice_index,
        z_mm=scan.center_mm[:, 0],
        window=np.zeros(len(scan), dtype=np.int8),
        scan_id=volume.scan_id,
        patient_id=volume.patient_id,
        encoder=encoder.encoder_name,
        weights_sha256=encoder.weights_sha256,
        image_size=spec.patch_size,
        windows=[(spec.window_name, float(spec.window[0]), float(spec.window[1]))],
        extra={"patch_center_mm": scan.center_mm, "patch_loc": scan.loc},
        attrs={"instance_kind": "patch3d", "patch_voxel_mm": spec.voxel_mm, "patch_grid_mm": spec.grid_mm,
               "patch_mask": scan.mask_kind},
    )
