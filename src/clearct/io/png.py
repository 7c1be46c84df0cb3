"""DeepLesion PNG slice folder reader: ``NNN.png`` uint16 slices, HU = value − 32768.

Other PNGs (8-bit screenshots, 16-bit exports with another offset) are refused unless ``png_values`` says how their
values map to HU: ``offset:N`` (HU = value + N) or ``window:LO:HI`` (0 … the bit depth's maximum → LO … HI HU);
``deeplesion`` is the default. A 16-bit folder whose values decode to nothing above −1000 HU with the DeepLesion
rule is refused too: it was written with another encoding.

Spacing comes from a DL_info-style table (``dl_info=`` or a ``DL_info.csv`` beside or up to three folders
above the slice folder; row ``File_name`` = ``<folder>_<NNN>.png``, ``Spacing_mm_px_`` = "x, y, z" mm), else
from ``spacing`` (slice spacing, mm), else 1 mm with a warning. DeepLesion does not record the z direction:
slices are ordered by file number and ``z_mm`` = number × slice spacing. The PNGs are stored in display
orientation (rows anterior → posterior, columns right → left), the contract's.
"""

from __future__ import annotations

import csv
import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from clearct.common.errors import ClearctError
from clearct.io.volume import CTVolume

HU_OFFSET = 32768
_SLICE_NAME = re.compile(r"^(\d+)\.png$", re.IGNORECASE)
_EXPECTS = ("clearct reads DeepLesion's 16-bit PNGs (HU = value − 32768); for other PNGs say how values map to HU "
            "with --png-values offset:N (HU = value + N) or --png-values window:LO:HI (0 … {top} → LO … HI HU)")


@dataclass(frozen=True)
class PngValues:
    """How stored PNG values become HU: ``deeplesion``, ``offset`` (HU = value + a) or ``window`` (0 … top → a … b)."""

    kind: str = "deeplesion"
    a: float = 0.0
    b: float = 0.0

    @classmethod
    def parse(cls, text: str | None) -> PngValues:
        if text is None or text.strip().lower() == "deeplesion":
            return cls()
        kind, _, rest = text.strip().partition(":")
        try:
            numbers = [float(v) for v in rest.split(":")] if rest else []
        except ValueError:
            numbers = []
        if kind == "offset" and len(numbers) == 1:
            return cls("offset", numbers[0])
        if kind == "window" and len(numbers) == 2 and numbers[0] < numbers[1]:
            return cls("window", numbers[0], numbers[1])
        raise ClearctError(f"--png-values {text!r}: expected deeplesion, offset:N or window:LO:HI with LO < HI")

    def to_hu(self, values: np.ndarray, top: int) -> np.ndarray:
        """int16 HU from stored ``values`` whose bit depth ends at ``top`` (255 or 65535)."""
        if self.kind == "deeplesion":
            hu = values.astype(np.int32) - HU_OFFSET
        elif self.kind == "offset":
            hu = np.rint(values.astype(np.float64) + self.a)
        else:
            hu = np.rint(self.a + values.astype(np.float64) * (self.b - self.a) / top)
        return np.clip(hu, -32768, 32767).astype(np.int16)

    def __str__(self) -> str:
        return {"deeplesion": "deeplesion", "offset": f"offset:{self.a:g}"}.get(self.kind, f"window:{self.a:g}:{self.b:g}")


def slice_files(folder: Path) -> list[tuple[int, Path]]:
    """(number, path) of the ``NNN.png`` files in ``folder``, by number."""
    found = []
    for p in folder.iterdir():
        m = _SLICE_NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def find_dl_info(folder: Path) -> Path | None:
    """A DL_info.csv beside the slice folder or in one of the three folders above it."""
    for parent in [folder, *list(folder.parents)[:3]]:
        candidate = parent / "DL_info.csv"
        if candidate.is_file():
            return candidate
    return None


def dl_info_spacing(table: Path, folder_name: str) -> tuple[float, float, float] | None:
    """(z, y, x) mm for ``folder_name`` from a DL_info table, or None when the table has no row for it."""
    stat = table.stat()
    return _spacing_index(table.resolve(), stat.st_mtime_ns, stat.st_size).get(folder_name)


@functools.lru_cache(maxsize=4)
def _spacing_index(table: Path, mtime_ns: int, size: int) -> dict[str, tuple[float, float, float]]:
    """Spacing of every series folder in a DL_info table, parsed once (DeepLesion: ~32k rows, ~10k folders);
    ``mtime_ns`` and ``size`` are in the key so an edited table is read again."""
    index: dict[str, tuple[float, float, float]] = {}
    try:
        with table.open(newline="") as fh:
            for row in csv.DictReader(fh):
                name = (row.get("File_name") or "").strip().rsplit("_", 1)[0]
                if name and name not in index:
                    x, y, z = (float(v) for v in row["Spacing_mm_px_"].split(","))
                    index[name] = (z, y, x)
    except (KeyError, ValueError, OSError) as exc:
        raise ClearctError(f"cannot read spacing from DL_info table: {exc}", table) from exc
    return index


_EIGHT_BIT = {"1", "L", "LA", "P", "RGB", "RGBA"}


def _read_slice(path: Path, mapping: PngValues) -> np.ndarray:
    try:
        with Image.open(path) as img:
            top = 255 if img.mode in _EIGHT_BIT else 65535
            plain = img.convert("RGB" if img.mode == "P" else "L") if img.mode in ("1", "P") else img
            values = np.asarray(plain)
    except Exception as exc:
        raise ClearctError(f"not a readable PNG: {type(exc).__name__}: {exc}", path) from exc
    if values.ndim == 3:  # grey stored as RGB(A) / LA: every colour channel must agree
        colour = values[..., :3] if values.shape[2] >= 3 else values[..., :1]  # alpha left aside
        if np.any(colour != colour[..., :1]):
            raise ClearctError(f"a colour image ({values.shape[2]} channels), not a greyscale CT slice", path)
        values = values[..., 0]
    if values.ndim != 2 or values.dtype.kind not in "ui" or values.min() < 0 or values.max() > 65535:
        raise ClearctError(f"expected a greyscale slice, got {values.dtype} {values.shape}", path)
    if top == 255 and mapping.kind == "deeplesion":
        raise ClearctError(f"an 8-bit PNG (values 0 … 255): {_EXPECTS.format(top=255)}", path)
    return mapping.to_hu(values, top)


def read_png_folder(
    path: Path | str, *, dl_info: Path | str | None = None, spacing: float | None = None,
    png_values: str | None = None,
) -> CTVolume:
    """Read a DeepLesion-style folder of ``NNN.png`` slices as a CTVolume (``png_values``: see the module)."""
    folder = Path(path)
    mapping = PngValues.parse(png_values)
    files = slice_files(folder)
    if not files:
        raise ClearctError("no NNN.png slices in the folder", folder)
    warnings: list[str] = []
    table = Path(dl_info) if dl_info is not None else find_dl_info(folder)
    sp = dl_info_spacing(table, folder.name) if table is not None else None
    if sp is None:
        where = f"{table.name} has no row for {folder.name}" if table is not None else "no DL_info table"
        z = float(spacing) if spacing else 1.0
        sp = (z, 1.0, 1.0)
        warnings.append(f"{where}: in-plane spacing unknown (1 mm assumed)")
        if not spacing:
            warnings.append("slice spacing unknown (1 mm assumed); pass --spacing")
    slices = [_read_slice(p, mapping) for _, p in files]
    if len({s.shape for s in slices}) > 1:
        raise ClearctError(f"slices differ in size {sorted({s.shape for s in slices})}", folder)
    brightest = max(int(s.max()) for s in slices)
    if mapping.kind == "deeplesion" and brightest < -1000:  # no tissue at all: not DeepLesion's encoding
        raise ClearctError(f"16-bit values decode to at most {brightest} HU with the DeepLesion rule: "
                           f"{_EXPECTS.format(top=65535)}", folder)
    numbers = np.array([n for n, _ in files])
    if np.any(np.diff(numbers) != 1):
        warnings.append(f"slice numbers are not contiguous ({numbers[0]}…{numbers[-1]}, {len(numbers)} files)")
    return CTVolume(
        hu=np.stack(slices),
        spacing_mm=sp,
        z_mm=numbers * sp[0],
        scan_id=folder.name,
        source=str(folder),
        meta={
            "format": "png",
            "first_slice_number": int(numbers[0]),
            "dl_info": str(table) if table is not None else None,
            "png_values": str(mapping),
            "warnings": warnings,
        },
    )
