"""The 3D networks of the end-to-end baseline, all built by well-kept libraries (none is written here).

============================== =================== ==========================================================
``--arch``                      library             notes
============================== =================== ==========================================================
resnet10, resnet18, resnet34,   MONAI ``ResNet``     MedicalNet layout (conv1 7×7×7 stride 2, max-pool, four
resnet50                                            stages); ``--width`` scales every stage's channels
densenet121                     MONAI ``DenseNet121``
r3d_18, mc3_18, r2plus1d_18     torchvision video    made for 16×112×112 clips; no early pooling, so several
                                ResNets             times the FLOPs of resnet18 on the same grid
============================== =================== ==========================================================

The input has one channel per HU window (the first convolution is built for that many channels) and the
classifier has one output per task output. All start from random weights unless ``weights`` names a local
checkpoint of the backbone (see :func:`load_backbone`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from clearct.common.errors import ClearctError


@dataclass(frozen=True)
class Arch:
    build: Callable[[int, int, float], nn.Module]  # (input channels, outputs, width) → network
    head: str  # dotted name of the classifier layer (replaced when loading a backbone checkpoint)
    first_conv: str  # dotted name of the first convolution (its input channels follow the windows)
    widens: bool = False


def _monai_resnet(name: str) -> Callable[[int, int, float], nn.Module]:
    def build(channels: int, n_out: int, width: float) -> nn.Module:
        from monai.networks.nets import resnet

        return getattr(resnet, name)(spatial_dims=3, n_input_channels=channels, num_classes=n_out,
                                     widen_factor=width, conv1_t_stride=2)

    return build


def _monai_densenet(channels: int, n_out: int, width: float) -> nn.Module:
    from monai.networks.nets import DenseNet121

    return DenseNet121(spatial_dims=3, in_channels=channels, out_channels=n_out)


def _torchvision_video(name: str) -> Callable[[int, int, float], nn.Module]:
    def build(channels: int, n_out: int, width: float) -> nn.Module:
        from torchvision.models import video

        net = getattr(video, name)(weights=None, num_classes=n_out)
        c = net.stem[0]
        net.stem[0] = nn.Conv3d(channels, c.out_channels, c.kernel_size, c.stride, c.padding, bias=False)
        return net

    return build


ARCHS: dict[str, Arch] = {
    **{n: Arch(_monai_resnet(n), "fc", "conv1", widens=True) for n in ("resnet10", "resnet18", "resnet34", "resnet50")},
    "densenet121": Arch(_monai_densenet, "class_layers.out", "features.conv0"),
    **{n: Arch(_torchvision_video(n), "fc", "stem.0") for n in ("r3d_18", "mc3_18", "r2plus1d_18")},
}


def build_net(arch: str, channels: int, n_out: int, width: float = 1.0) -> nn.Module:
    if arch not in ARCHS:
        raise ClearctError(f"unknown 3D architecture {arch!r} (choose from {', '.join(ARCHS)})")
    if width != 1.0 and not ARCHS[arch].widens:
        raise ClearctError(f"--width applies to the MONAI ResNets only, not to {arch}")
    return ARCHS[arch].build(channels, n_out, width)


def _module(net: nn.Module, dotted: str) -> nn.Module:
    return net.get_submodule(dotted)


def _replace(net: nn.Module, dotted: str, new: nn.Module) -> None:
    parent, _, name = dotted.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, name, new)


def adapt_first_conv(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """A first-layer kernel for ``channels`` inputs from one for another number (a 1-channel MedicalNet or a
    3-channel video checkpoint): the mean over the old input channels, repeated and scaled so that the same image
    in every channel gives the old response."""
    old = weight.shape[1]
    return weight.mean(1, keepdim=True).repeat(1, channels, *([1] * (weight.ndim - 2))) * (old / channels)


def load_backbone(net: nn.Module, arch: str, path: Path) -> str:
    """Load a local checkpoint into everything but the classifier (which stays freshly initialised); returns the
    file's sha256. Uses the registry's strict loading (prefixes such as ``module.`` removed, one line naming
    missing, unexpected or mis-shaped tensors); the first convolution is adapted to the number of windows."""
    from clearct.encoders.baselines.common import read_state, weights_digest
    from clearct.encoders.weights import common_prefix, match_state, tensors_of

    path = Path(path)
    if not path.exists():
        raise ClearctError("weights file not found", path)
    spec = ARCHS[arch]
    state = dict(tensors_of(read_state(path), path))
    first = _module(net, spec.first_conv).weight
    assert isinstance(first, torch.Tensor)  # a convolution's kernel
    key = common_prefix(list(state), set(net.state_dict())) + spec.first_conv + ".weight"
    if key in state and state[key].ndim == first.ndim and state[key].shape[1] != first.shape[1]:
        state[key] = adapt_first_conv(state[key], first.shape[1])
    head = _module(net, spec.head)
    _replace(net, spec.head, nn.Identity())
    try:  # a checkpoint's own classifier is dropped, not an error
        net.load_state_dict(match_state(net, state, path, ignore_prefixes=(spec.head + ".",)), strict=True)
    finally:
        _replace(net, spec.head, head)
    return weights_digest(path)
