"""Foundation-model baselines as frozen extractors (optional extras, weights only from local paths).

Each is built offline from its package's architecture classes and registered by name in the encoder registry:
``biomedclip`` (512-d), ``sam2_hiera_large`` (256-d), ``merlin`` (3D, 512-d), ``ctclip`` (3D, 512-d, GPU only).
The optional packages are imported only when a baseline is built.
"""

from clearct.encoders.baselines import biomedclip, ctclip, merlin, sam2
from clearct.encoders.baselines.biomedclip import build_biomedclip
from clearct.encoders.baselines.ctclip import build_ctclip
from clearct.encoders.baselines.merlin import build_merlin
from clearct.encoders.baselines.sam2 import build_sam2_hiera_large

BASELINES = {
    "biomedclip": build_biomedclip,
    "sam2_hiera_large": build_sam2_hiera_large,
    "merlin": build_merlin,
    "ctclip": build_ctclip,
}
# name → where its released weights are published and which file to pass as --weights (clearct encoders)
RELEASED_WEIGHTS = {
    "biomedclip": biomedclip.RELEASED_WEIGHTS,
    "sam2_hiera_large": sam2.RELEASED_WEIGHTS,
    "merlin": merlin.RELEASED_WEIGHTS,
    "ctclip": ctclip.RELEASED_WEIGHTS,
}

__all__ = ["BASELINES", "RELEASED_WEIGHTS", "build_biomedclip", "build_ctclip", "build_merlin",
           "build_sam2_hiera_large"]
