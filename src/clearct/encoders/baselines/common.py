"""What every foundation-model baseline shares: lazy optional imports, local weight files, provenance."""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import torch

from clearct.common.errors import ClearctError
from clearct.common.runs import sha256_file

RANDOM_INIT = "random-init"


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import an optional package, or fail with one line naming the pip extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ClearctError(
            f"{what} needs the optional package '{module}': pip install 'clearct[{extra}]' ({exc})"
        ) from exc


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a local weight file (.safetensors, or a torch pickle read with ``weights_only=True``),
    or of every .safetensors file in a Hugging Face model folder."""
    path = Path(path)
    from safetensors.torch import load_file

    try:
        if path.is_dir():
            files = sorted(path.glob("*.safetensors"))
            if not files:
                raise ClearctError("model folder holds no .safetensors file", path)
            return {k: v for f in files for k, v in load_file(f).items()}
        if path.suffix == ".safetensors":
            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise ClearctError("weights file not found", path) from exc
    except ClearctError:
        raise
    except Exception as exc:  # unpickling/format errors come in many types
        raise ClearctError(f"cannot read weights ({type(exc).__name__}: {exc})", path) from exc


def weights_digest(path: str | Path) -> str:
    """sha256 of a weight file; for a model folder, of its .safetensors files' digests in name order."""
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    digest = hashlib.sha256()
    for f in sorted(path.glob("*.safetensors")):
        digest.update(f"{f.name}:{sha256_file(f)}\n".encode())
    return digest.hexdigest()


def sub_state(state: dict[str, torch.Tensor], prefix: str, path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix`` with the prefix removed; none is an error naming the file."""
    out = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not out:
        sample = ", ".join(list(state)[:3])
        raise ClearctError(f"no '{prefix}*' tensors in the weights (found e.g. {sample})", path)
    return out


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """``load_state_dict(strict=True)`` with missing/unexpected keys and shape errors as one ClearctError."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ClearctError(f"weights do not fit the architecture: {' '.join(first[:3])[:400]}", path) from exc


F = TypeVar("F", bound="FrozenBaseline")


class FrozenBaseline(torch.nn.Module):
    """Common attributes of a frozen extractor (the encoder interface of clearct.encoders)."""

    encoder_name: str
    embed_dim: int
    input_size: int
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    is_3d: bool = False
    weights_sha256: str = RANDOM_INIT

    def frozen(self: F, weights: str | Path | None) -> F:
        """Record the weights' provenance, switch to eval mode and stop gradients."""
        self.weights_sha256 = RANDOM_INIT if weights is None else weights_digest(weights)
        self.requires_grad_(False)
        return self.eval()
