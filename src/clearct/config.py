"""One pydantic model per command. The CLI builds its flags from these models, and ``--config FILE.yaml`` fills
the same fields, so a YAML file and the command line are two spellings of one configuration.

Each command's settings are written once, here, with their defaults. A command's ``*Settings`` model holds how it
works; its ``*Config`` adds what it reads and writes (paths, device, seed). The workflows (demo, benchmark) run
several commands and nest a *section* per command: a :func:`section` of its settings whose fields are all ``None``
placeholders. A workflow resolves a section onto the command's settings with :func:`resolve`: the user's values
first, then the workflow's preset, then the command's own defaults — so a file written by ``clearct init`` (every
field present, placeholders ``null``) behaves exactly as no file.

Conventions: a field marked ``positional`` is a positional argument; list fields accept ``a,b,c`` on the command
line; a nested model is a section (YAML mapping, flags ``--<section>-<field>``); every model forbids unknown keys
so a typo in a YAML file is an error, not a silent default.
This module must not import torch (``clearct --help`` stays fast).
"""

from __future__ import annotations

import difflib
import types
import typing
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)


def _positional(description: str) -> dict:
    return {"description": description, "json_schema_extra": {"positional": True}}


def _is_list(annotation: Any) -> bool:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _is_list(args[0])
    return typing.get_origin(annotation) is list


def section_type(annotation: Any) -> type[CommandConfig] | None:
    """The model of a nested section field (``X`` or ``X | None``), else None."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    return annotation if isinstance(annotation, type) and issubclass(annotation, CommandConfig) else None


def _feature_memory(bytes_per_value: int) -> Any:
    return Field(
        None, gt=0, description="hold at most this many GB of feature matrices in memory and read the others from "
        "their h5 files when a batch needs them (least recently used first out); default: every bag in memory "
        f"(bags × instances × dim × {bytes_per_value} bytes, docs/scale.md)"
    )


def _png_values() -> Any:
    """The PNG value mapping option shared by every command that reads scans (docs/inputs.md)."""
    return Field(
        None, description="how PNG slice values map to HU: deeplesion (16-bit, HU = value − 32768; the default), "
        "offset:N (HU = value + N) or window:LO:HI (0 … the bit depth's maximum → LO … HI HU, e.g. 8-bit PNGs)"
    )


def _random_init() -> Any:
    """Consent to random features from a foundation baseline (clearct.encoders.random_init)."""
    return Field(
        False, description="allow a foundation baseline without --weights (random features: controls and tests only)"
    )


def _device() -> Any:
    return Field("auto", description="auto, cpu, cuda or cuda:N")


class CommandConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _comma_lists(cls, data: Any) -> Any:
        """``"a,b,c"`` → ``["a", "b", "c"]`` for every list field (the command line's spelling of a list)."""
        if isinstance(data, dict):
            data = dict(data)
            for name, value in data.items():
                info = cls.model_fields.get(name)
                if info is not None and isinstance(value, str) and _is_list(info.annotation):
                    data[name] = [v.strip() for v in value.split(",") if v.strip()]
        return data


def suggest(word: str, known: typing.Iterable[str]) -> str | None:
    """The closest of ``known`` to a misspelt ``word`` (``-`` and ``_`` alike), or None when none is close."""
    spelt = {k.replace("-", "_"): k for k in known}
    match = difflib.get_close_matches(word.replace("-", "_"), list(spelt), n=1, cutoff=0.6)
    return spelt[match[0]] if match else None


def unknown_keys(model: type[CommandConfig], values: dict, prefix: str = "") -> list[tuple[str, str | None]]:
    """The keys of ``values`` (a file's mapping, sections nested) that ``model`` does not have, dotted
    (``crossval.fold``), each with the closest known key (``crossval.folds``) or None."""
    found: list[tuple[str, str | None]] = []
    for key, value in values.items():
        info = model.model_fields.get(str(key))
        if info is None:
            close = suggest(str(key), model.model_fields)
            found.append((prefix + str(key), None if close is None else prefix + close))
            continue
        inner = section_type(info.annotation)
        if inner is not None and isinstance(value, dict):
            found += unknown_keys(inner, value, f"{prefix}{key}.")
    return found


# --- sections: a command's settings with every field a None placeholder ---------------------------------------

_SECTION_OF: dict[type, type[CommandConfig]] = {}


def section_source(model: type[CommandConfig]) -> type[CommandConfig] | None:
    """The command settings a :func:`section` model was made from (their defaults are what None resolves to when
    no preset sets a field); None for other models."""
    return _SECTION_OF.get(model)


@cache
def section(model: type[CommandConfig]) -> type[CommandConfig]:
    """``model`` with every field optional and ``None`` by default (nested sections likewise): what a workflow
    nests. Field constraints stay, so a bad value is still refused when the file or the flags are read."""
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        inner = section_type(info.annotation)
        if inner is not None:  # a nested section: empty by default
            fields[name] = (section(inner), Field(default_factory=section(inner), description=info.description))
            continue
        annotation: Any = info.annotation  # a model's field always has one (None only on a bare FieldInfo)
        optional = annotation | None
        if info.metadata:  # constraints (ge, gt …) apply to the value when one is given
            optional = Annotated[(optional, *info.metadata)]
        fields[name] = (optional, Field(None, description=info.description))
    made: type[CommandConfig] = create_model(f"{model.__name__}Section", __base__=CommandConfig,
                                             __doc__=model.__doc__, **fields)
    _SECTION_OF[made] = model
    return made


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _given(values: CommandConfig | dict | None) -> dict:
    """The non-None values of a section (at every depth)."""
    if values is None:
        return {}
    data = values.model_dump(exclude_none=True) if isinstance(values, BaseModel) else values
    return {k: _given(v) if isinstance(v, dict) else v for k, v in data.items() if v is not None}


def resolve(model: type[CommandConfig], *layers: CommandConfig | dict | None) -> Any:
    """``model`` built from ``layers`` (lowest priority first: e.g. a preset, then the user's section); ``None``
    values never override, fields no layer gives keep ``model``'s defaults."""
    merged: dict = {}
    for layer in layers:
        merged = _deep_merge(merged, _given(layer))
    return model(**merged)


def section_field(model: type[CommandConfig], description: str) -> Any:
    """A workflow's section of ``model``: empty by default (every field a placeholder)."""
    return Field(default_factory=section(model), description=description)


# --- commands ---------------------------------------------------------------------------------------------------

def _series() -> Any:
    return Field(None, description="which series of a DICOM folder that holds several: a SeriesInstanceUID, "
                 "number:N (SeriesNumber) or index:K (as clearct info lists them); default: the default rule "
                 "(docs/inputs.md)")


class InfoConfig(CommandConfig):
    path: Path = Field(**_positional("CT scan: DICOM folder, NIfTI file, PNG slice folder or .npz"))
    series: str | None = _series()
    spacing: float | None = Field(None, description="slice spacing in mm for PNG folders without a DL_info table")
    png_values: str | None = _png_values()


class SynthFindings(CommandConfig):
    """Prevalences and difficulty of the phantoms' findings (docs/synth.md)."""

    location_prevalence: float = Field(0.35, ge=0, le=1, description="chance per lesion location (Task 1 labels)")
    lung_prevalence: float = Field(0.3, ge=0, le=1, description="chance per lung abnormality (Task 2 labels)")
    primary_tumour: float = Field(0.4, ge=0, le=1, description="share of patients with a primary lung tumour")
    stage_high_share: float = Field(0.5, ge=0, le=1, description="share of tumour patients with high stage (Task 3)")
    lesion_size_mm: list[float] = Field([10.0, 50.0], description="lesion diameter range min,max in mm (harder: 5,20)")
    lesion_contrast: float = Field(1.0, gt=0, description="scales lesion-minus-organ HU difference (harder: 0.3)")

    @field_validator("lesion_size_mm")
    @classmethod
    def _size_range(cls, value: list[float]) -> list[float]:
        if len(value) != 2 or not 2.0 <= value[0] <= value[1] <= 120.0:
            raise ValueError(f"lesion_size_mm takes min,max with 2 ≤ min ≤ max ≤ 120 (got {value})")
        return value


class SynthSettings(SynthFindings):
    format: Literal["dicom", "nifti", "png"] = Field("dicom", description="file format of the scans")
    size: int = Field(128, ge=32, description="in-plane size in pixels (Y = X)")
    slices: int = Field(48, ge=4, description="number of axial slices per scan (unless --slice-mm)")
    pixel_mm: list[float] | None = Field(
        None, description="in-plane pixel spacing lo,hi in mm drawn per patient (clinical: 0.6,0.9; FOV = size × "
        "pixel); default: the FOV fits the body"
    )
    slice_mm: list[float] | None = Field(
        None, description="slice spacing lo,hi in mm drawn per patient (clinical: 1,5); the number of slices then "
        "follows from the scan range (a 1 mm chest-abdomen-pelvis scan ≈ 700–800 slices)"
    )
    scan_range: Literal["mixed", "chest", "cap"] = Field(
        "mixed", description="chest-only scans, chest-abdomen-pelvis (cap) scans, or half of each (mixed)"
    )
    unannotated: float = Field(0.3, ge=0, le=1, description="share of scans without lesions.csv boxes")
    acquisition: Literal["standard", "external"] = Field(
        "standard", description="acquisition preset; external = other scanner (noise, kernel, thickness, offset)"
    )
    noise_hu: float | None = Field(None, ge=0, description="noise SD in HU (default from the preset: 12 / 22)")
    kernel: Literal["soft", "standard", "sharp"] | None = Field(None, description="reconstruction kernel override")
    thickness_factor: float | None = Field(None, ge=1, description="slice thickness / spacing override (≥ 1)")
    hu_offset: float | None = Field(None, description="HU calibration offset override")
    workers: int = Field(2, ge=1, description="worker processes (one patient each)")

    @field_validator("pixel_mm", "slice_mm")
    @classmethod
    def _spacing_range(cls, value: list[float] | None, info: ValidationInfo) -> list[float] | None:
        if value is None:
            return None
        lo, hi = (0.2, 2.0) if info.field_name == "pixel_mm" else (0.5, 10.0)
        value = value * 2 if len(value) == 1 else value
        if len(value) != 2 or not lo <= value[0] <= value[1] <= hi:
            raise ValueError(f"takes one value or lo,hi with {lo} ≤ lo ≤ hi ≤ {hi} mm (got {value})")
        return value


class SynthConfig(SynthSettings):
    out: Path = Field(**_positional("output folder for the synthetic cohort"))
    patients: int = Field(20, ge=1, description="number of patients (one scan each)")
    seed: int = Field(0, description="random seed; the same seed gives identical files")


class DrasclrSettings(CommandConfig):
    """DrasCLR (``--method drasclr``; clearct.pretrain.drasclr, docs/drasclr.md). The size fields left empty come
    from the preset."""

    preset: Literal["auto", "paper", "cpu"] = Field(
        "auto", description="sizes of the fields not given — paper (the authors' 32³ patches, batch 256), cpu (16³ "
        "patches of 2 mm, batch 32: minutes on 2 cores), auto (cpu without a GPU, else paper)"
    )
    patch_size: int | None = Field(None, ge=8, description="patch side in voxels (paper 32, cpu 16)")
    voxel_mm: float | None = Field(None, gt=0, description="patch voxel size in mm, isotropic (paper 1, cpu 2)")
    grid_mm: float | None = Field(None, gt=0, description="step of the patch-centre grid in mm (paper 20, cpu 30)")
    channels: list[int] | None = Field(None, description="CNN widths, stem first (paper 8,16,32,64; cpu 8,16,32)")
    experts: int | None = Field(None, ge=1, description="expert kernels per conditional convolution (paper 8, cpu 4)")
    queue: int | None = Field(None, ge=1, description="queued negatives per location bin (paper 1024, cpu 256)")
    mask: Literal["lung", "body"] = Field("lung", description="region the patches lie in")
    window: list[float] = Field([-1024.0, 240.0], description="lung HU window lo,hi → [-1, 1]")
    embed_dim: int = Field(128, ge=2, description="patch embedding size")
    proj_dim: int = Field(128, ge=2, description="MoCo projection size")
    location_bins: int = Field(4, ge=1, description="location bins per axis (queue per bin)")
    neighbours: int = Field(2, ge=1, description="nearest patches in the neighbour loss")
    beta: float = Field(1.0, ge=0, description="weight of the neighbour loss")
    tau: float = Field(0.2, gt=0, description="InfoNCE temperature")
    momentum: float = Field(0.999, ge=0, le=1, description="key-encoder momentum")
    lr: float = Field(0.01, gt=0, description="SGD learning rate (cosine decay)")

    @field_validator("window")
    @classmethod
    def _window_pair(cls, value: list[float]) -> list[float]:
        if len(value) != 2 or value[0] >= value[1]:
            raise ValueError("window takes two HU values lo,hi with lo < hi")
        return value


def optimizer_steps(value: list[int], info: ValidationInfo) -> list[int]:
    """A list of optimizer steps (snapshot points): each ≥ 1, sorted, without repeats."""
    if any(v < 1 for v in value):
        raise ValueError(f"{info.field_name} are optimizer steps ≥ 1, got {value}")
    return sorted(set(value))


class PretrainSettings(CommandConfig):
    arch: str = Field("vit_conv_small", description="encoder architecture from the registry (clearct encoders)")
    method: Literal["moco", "lecl", "supervised", "drasclr"] = Field(
        "lecl", description="moco: plain MoCo v3; lecl: LECL; supervised: the supervised ceiling (per-slice "
        "lesion labels of --lesions); drasclr: DrasCLR (3D)"
    )
    lam: float = Field(1.0, ge=0, description="λ, weight of the lesion term in LECL (0 gives LECL-0)")
    variant: Literal["paper", "official"] = Field(
        "paper", description="paper: eq. 2 (λ·ψ); official: the authors' code (ψ^λ inside the sum)"
    )
    epochs: int = Field(100, ge=1, description="training epochs")
    batch_size: int | None = Field(
        None, ge=2, description="global batch size, split over torchrun ranks (default: 256, smaller for cohorts "
        "under 4,096 slices so an epoch has ≥ 16 steps; drasclr: from its preset)"
    )
    image_size: int | None = Field(
        None, ge=16, description="input size of the encoder in pixels (default: the architecture's, e.g. 224); "
        "stored in encoder.json and used by extract and predict"
    )
    windows: list[str] = Field(["lung", "abdomen"], description="HU windows drawn per sample: presets or name:lo:hi")
    png_values: str | None = _png_values()
    workers: int = Field(2, ge=0, description="data-loader worker processes")
    views: Literal["loader", "device"] = Field(
        "loader", description="where the two views are made: loader (worker processes) or device (the workers only "
        "read slices and draw the augmentations; the training device renders the batch: the same views, fewer "
        "loader cores per GPU)"
    )
    lesion_share: float | None = Field(
        None, gt=0, lt=1, description="share of each epoch drawn from annotated slices (key slices for lecl, every "
        "lesion slice for supervised); default: their natural share"
    )
    # --- methods moco, lecl and supervised (MoCo v3 recipe; see docs/pretraining.md) ---
    lr: float = Field(1e-4, gt=0, description="base learning rate; AdamW uses lr × batch-size / 256 (MoCo v3 rule)")
    warmup_epochs: float | None = Field(
        None, ge=0, description="epochs of linear lr warmup before the cosine decay (default: the paper's 10, at "
        "most a tenth of the run)"
    )
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay")
    tau: float = Field(0.2, gt=0, description="temperature τ of the contrastive loss")
    momentum: float = Field(0.99, ge=0, le=1, description="key-encoder momentum m0 at the start (half-cosine to 1)")
    crop_min: float = Field(0.08, gt=0, le=1, description="smallest crop area fraction (lesion crop side ≥ √crop_min·W)")
    window_jitter: float = Field(
        1.0, ge=0, description="strength of the HU window jitter of the views: scales the level shift (±0.1 × "
        "width) and the width range (×0.8–1.25); 1 = MoCo v3's brightness/contrast jitter (the paper's recipe), "
        "0 = no jitter (kept emphysema more visible in 1-epoch CPU runs: docs/pretraining.md)"
    )
    lesion_crop_scale: list[float] | None = Field(
        None, description="lecl: lesion crop side as lo,hi × the box's longer side (e.g. 2,4); default: a share "
        "of the image as --crop-min"
    )
    proj_dim: int = Field(256, ge=2, description="output size of the projector and predictor")
    mlp_dim: int | None = Field(
        None, ge=2, description="hidden size of the projector and predictor (default: 16 × the encoder's width, "
        "at most MoCo v3's 4096)"
    )
    lesion_own_positive: bool = Field(
        False, description="also count the query's own positive key in the LECL lesion sum"
    )
    log_every: int = Field(10, ge=1, description="write pretrain-log.csv every N steps")
    amp: bool = Field(True, description="bf16 autocast on CUDA (no effect on CPU)")
    drasclr: DrasclrSettings = Field(DrasclrSettings(), description="method drasclr only")

    @field_validator("lesion_crop_scale")
    @classmethod
    def _scale_pair(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (len(value) != 2 or not 0 < value[0] <= value[1]):
            raise ValueError("lesion_crop_scale takes two factors lo,hi with 0 < lo ≤ hi")
        return value


class PretrainConfig(PretrainSettings):
    scans: Path = Field(..., description="scans.csv of the pretraining cohort")
    lesions: Path | None = Field(None, description="lesions.csv with key-slice boxes (needed for --method lecl)")
    out: Path = Field(..., description="run folder (checkpoints, log, encoder.safetensors, encoder.json)")
    cache_dir: Path | None = Field(None, description="slice cache folder, shared between runs (default: RUN/slice-cache)")
    cache_format: Literal["zstd", "npy"] = Field(
        "zstd", description="slice cache files: zstd (lossless per-slice frames, about a third of the int16 size) or "
        "npy (int16, memory-mapped)"
    )
    resume: bool = Field(False, description="continue from the last checkpoint in --out")
    stop_after: int | None = Field(
        None, ge=1, description="end this invocation after N more epochs (checkpointed; --resume continues)"
    )
    snapshot_steps: list[int] = Field(
        [], description="also export the encoder after these optimizer steps, as run folders "
        "RUN/snapshots/step-<n>/ (MoCo, LECL, supervised; the lr and momentum schedules still span all --epochs)"
    )
    device: str = _device()
    seed: int = Field(0, description="random seed")

    @field_validator("snapshot_steps")
    @classmethod
    def _positive_steps(cls, value: list[int], info: ValidationInfo) -> list[int]:
        return optimizer_steps(value, info)


class ExtractSettings(CommandConfig):
    image_size: int | None = Field(
        None, ge=16, description="encoder input size in pixels (default: a run folder's training size, else the "
        "architecture's)"
    )
    allow_resize: bool = Field(False, description="run a pretraining run folder at another --image-size than its own")
    random_init: bool = _random_init()
    windows: list[str] = Field(["lung", "abdomen"], description="HU windows, each slice is embedded once per window")
    png_values: str | None = _png_values()
    batch_size: int = Field(64, ge=1, description="slices per forward pass")
    workers: int = Field(2, ge=0, description="scans read and preprocessed ahead of the forward pass")
    overwrite: bool = Field(False, description="recompute feature files that exist with other settings")


class ExtractConfig(ExtractSettings):
    scans: Path = Field(..., description="scans.csv of the cohort to embed")
    encoder: str = Field(..., description="registry name, timm:<name>, random:<arch>, a baseline, or a pretraining run folder")
    weights: Path | None = Field(None, description="local weights file for the encoder")
    out: Path = Field(..., description="folder for the <scan_id>.h5 feature files")
    device: str = _device()


class ValidationSettings(CommandConfig):
    """How the commands that cross-validate one model family on labelled patients (crossval, finetune3d) split
    and score: the same values (and seed) give the same patient-level folds in both."""

    task: Literal["multilabel", "multiclass", "binary", "regression", "survival"] | None = Field(
        None, description="prediction task; default: inferred from the label values of --targets (binary: one "
        "column with two values; multilabel: several 0/1 columns; multiclass: one column with more than two "
        "categories; regression: numbers) and printed; survival (--targets time,event) must be given"
    )
    folds: int = Field(5, ge=2, description="number of cross-validation folds")
    nested: bool = Field(False, description="nested cross-validation (outer folds × inner folds)")
    val_frac: float = Field(0.2, gt=0, lt=1, description="share of each training part used for early stopping")
    test_frac: float = Field(0.0, ge=0, lt=1, description="share of patients held out as a fixed test set")
    split_column: str | None = Field(None, description="labels.csv column marking the held-out test set (values "
                                     "test or holdout)")
    bootstrap: int = Field(1000, ge=0, description="patient-level bootstrap resamples for the 95% CIs")
    calibrate: Literal["none", "temperature", "platt"] = Field(
        "none", description="calibrate each fold model's probabilities on its validation part: temperature "
        "scaling or Platt scaling per output (classification tasks; thresholds then chosen on calibrated scores)"
    )


class ValidationConfig(CommandConfig):
    """What both cross-validating commands read and write besides their own inputs."""

    labels: Path = Field(..., description="labels.csv (patient_id or scan_id + one column per target)")
    targets: list[str] = Field(..., description="label columns to predict, comma separated (survival: time,event)")
    splits: Path | None = Field(None, description="reuse the folds of an earlier splits.json (crossval's or finetune3d's)")
    resume: bool = Field(True, description="reuse fold models already trained in --out with the same settings")
    seed: int = Field(0, description="random seed (the splits and every model)")
    device: str = _device()


class MilTraining(CommandConfig):
    """One MIL model's training (clearct.mil.train): the paper's ABMIL recipe plus clearct's step floor and input
    standardisation (docs/mil.md). Saved with every fold model."""

    model: str = Field(
        "abmil", description="MIL model of the registry (clearct.mil.models): abmil (eq. 3), gated (gated "
        "attention), meanpool and mlp (baselines)"
    )
    epochs: int = Field(32, ge=1, description="maximum training epochs per fold")
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    batch_size: int = Field(128, ge=1, description="bags per optimizer step (lowered by --min-steps on small cohorts)")
    min_steps: int = Field(2000, ge=0, description="floor on optimizer steps per model: the batch shrinks to reach it")
    bag_size: int = Field(512, ge=1, description="instances drawn at random per training bag (evaluation: whole bags)")
    instance_dropout: float = Field(
        0.0, ge=0, lt=1, description="share of a training bag's instances masked out at random each step (at least "
        "one stays; the bag keeps its length, masked instances get zero attention; evaluation: whole bags)"
    )
    patience: int = Field(8, ge=1, description="early stopping: epochs without a better validation loss")
    hidden: int = Field(256, ge=1, description="width of the instance encoder, the attention and the head")
    dropout: float = Field(0.25, ge=0, lt=1, description="dropout of the instance encoder and the head")
    window_embedding: bool = Field(False, description="add a learned embedding of each instance's HU window")
    standardize: bool = Field(
        True, description="z-score features with the training part's statistics (saved in the model); "
        "--no-standardize feeds raw features as the authors' code does"
    )
    regression_loss: Literal["l1", "mse"] = Field("l1", description="loss of the regression task")
    eval_instances: int = Field(32768, ge=1, description="instances per inference batch (whole bags, padded)")


class CrossvalSettings(ValidationSettings, MilTraining):
    use_windows: list[str] | None = Field(
        None, description="train on the instances of these HU windows only (names in the feature files, comma "
        "separated, e.g. lung); default: every window; deploy, attention and predict then use the same ones"
    )


class CrossvalConfig(CrossvalSettings, ValidationConfig):
    features: Path = Field(..., description="folder of <scan_id>.h5 feature files")
    out: Path = Field(..., description="output folder (predictions, metrics, fold models, plots, compute.json)")
    error_viewers: bool = Field(True, description="write viewer.html for the most confident errors into errors/ "
                                "(≤ 6 per target, ≤ 20 per run; the CT comes from the feature files' source)")
    feature_memory_gb: float | None = _feature_memory(2)


# the architectures of clearct.finetune3d.models.ARCHS (listed here so that --help does not import torch; a test
# checks that the two agree)
ARCHS_3D = ("resnet10", "resnet18", "resnet34", "resnet50", "densenet121", "r3d_18", "mc3_18", "r2plus1d_18")


class VolumeTraining(CommandConfig):
    """One 3D network's training (clearct.finetune3d.train); saved with every fold model. Defaults are sized for a
    CPU; docs/efficiency.md gives GPU settings."""

    arch: Literal[ARCHS_3D] = Field(  # type: ignore[valid-type]
        "resnet10", description="3D network: MONAI resnet10/18/34/50 or densenet121, torchvision r3d_18/mc3_18/r2plus1d_18"
    )
    width: float | None = Field(
        None, gt=0, description="channel width factor of the MONAI ResNets (default 0.5, CPU-sized; 1 = published)"
    )
    epochs: int = Field(12, ge=1, description="maximum training epochs per fold")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    batch_size: int = Field(4, ge=1, description="volumes per optimizer step")
    patience: int = Field(4, ge=1, description="early stopping: epochs without a better validation loss")
    augment: bool = Field(True, description="random shift and HU scale/offset of training volumes")
    amp: bool = Field(True, description="bf16 autocast on CUDA (no effect on CPU)")


class Finetune3dSettings(ValidationSettings, VolumeTraining):
    """The end-to-end 3D baseline (docs/efficiency.md)."""

    windows: list[str] = Field(["lung", "abdomen"], description="HU windows, one input channel each")
    grid: list[int] = Field([32, 64, 64], description="input grid z,y,x in voxels (GPU: 64,128,128)")
    spacing: list[float] | None = Field(
        None, description="voxel size z,y,x in mm, cropped/padded around the body; default: fit each scan's body"
    )
    body_hu: float = Field(-500.0, description="HU above which a voxel counts as body (centring, fitting)")
    workers: int = Field(2, ge=0, description="threads reading scans ahead")

    @field_validator("grid")
    @classmethod
    def _three_sizes(cls, value: list[int]) -> list[int]:
        if len(value) != 3 or min(value) < 4:
            raise ValueError("grid takes three sizes z,y,x of at least 4 voxels")
        return value

    @field_validator("spacing")
    @classmethod
    def _three_spacings(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (len(value) != 3 or min(value) <= 0):
            raise ValueError("spacing takes three positive sizes z,y,x in mm")
        return value


class Finetune3dConfig(Finetune3dSettings, ValidationConfig):
    scans: Path = Field(..., description="scans.csv of the cohort (whole volumes are the model input)")
    out: Path = Field(..., description="output folder (the files of crossval + compute.json)")
    weights: Path | None = Field(None, description="local checkpoint of the backbone (e.g. MedicalNet); default random")
    cache_dir: Path | None = Field(None, description="folder of the resampled volumes, shareable between runs "
                                   "(default: OUT/volume-cache)")


class DeployConfig(CommandConfig):
    model: Path = Field(..., description="a crossval or finetune3d output folder (its fold models form the ensemble)")
    features: Path | None = Field(None, description="folder of feature files of the external cohort (crossval models)")
    scans: Path | None = Field(None, description="scans.csv of the external cohort (finetune3d models)")
    labels: Path = Field(..., description="labels.csv of the external cohort")
    out: Path = Field(..., description="output folder")
    allow_overlap: bool = Field(False, description="deploy even when deployment patients were in training")
    lesions: Path | None = Field(None, description="lesions.csv of the external cohort: boxes in the error viewers")
    error_viewers: bool = Field(True, description="write viewer.html for the most confident errors into errors/ "
                                "(≤ 6 per target, ≤ 20 per run)")
    bootstrap: int = Field(1000, ge=0, description="patient-level bootstrap resamples for the 95% CIs")
    seed: int = Field(0, description="random seed of the bootstrap")
    device: str = _device()
    feature_memory_gb: float | None = _feature_memory(4)


# how a heatmap is computed (clearct.inference.heatmaps; docs/interpret.md "The method")
HeatmapMethod = Literal["gradient-input", "gradcam"]


def _heatmap_method() -> Any:
    return Field("gradient-input", description="gradient-input: the gradient of each target's logit with respect to "
                 "the encoder's input pixels times those pixels (the slice's own resolution); gradcam: Grad-CAM on "
                 "the encoder's last spatial map (its coarse grid)")


class AttentionConfig(CommandConfig):
    model: Path = Field(..., description="a crossval output folder")
    features: Path = Field(..., description="folder of <scan_id>.h5 feature files")
    out: Path = Field(..., description="output folder for attention.csv and one figure per scan")
    scans: Path | None = Field(None, description="scans.csv: the CT for the montage of the top attended slices, the "
                               "viewers and the heatmaps (default: the path each feature file records, when it "
                               "exists)")
    lesions: Path | None = Field(None, description="lesions.csv: marks the known lesion slices (boxes in the viewers)")
    top_k: int = Field(6, ge=1, description="slices in the montage (and instances with heatmaps)")
    figures: int = Field(50, ge=0, description="draw figures and viewers for the first N scans (attention.csv "
                         "covers all)")
    viewers: bool = Field(True, description="write viewers/<scan_id>.html for the drawn scans (needs their CT: "
                          "--scans, or the source path their feature files record)")
    heatmaps: bool = Field(False, description="heatmaps of every target over the top-k attended slices: "
                           "heatmaps/<scan_id>.h5 and PNG overlays (needs --scans; docs/interpret.md)")
    heatmap_method: HeatmapMethod = _heatmap_method()
    encoder: str | None = Field(None, description="heatmaps: the models' encoder (name or run folder; default: "
                                "the one the features were extracted with)")
    weights: Path | None = Field(None, description="heatmaps: local weights file for --encoder")
    device: str = _device()
    feature_memory_gb: float | None = _feature_memory(4)


class PredictConfig(CommandConfig):
    scan_path: Path = Field(**_positional(
        "one scan (DICOM folder, NIfTI file, PNG folder or .npz), or a scans.csv: one output folder per scan"))
    model: Path = Field(..., description="a crossval output folder")
    encoder: str | None = Field(None, description="the encoder the model's features came from (name or run "
                                "folder); default: the one the models' training features record (their extract "
                                "run's config.yaml)")
    weights: Path | None = Field(None, description="local weights file for the encoder")
    random_init: bool = _random_init()
    png_values: str | None = _png_values()
    out: Path = Field(..., description="output folder for prediction.json and attention.png")
    series: str | None = Field(None, description="which series of a DICOM folder that holds several: a "
                               "SeriesInstanceUID, number:N or index:K; default: the series_uid column of a "
                               "scans.csv, else the default rule (docs/inputs.md)")
    lesions: Path | None = Field(None, description="lesions.csv: boxes drawn in viewer.html (matched by scan_id)")
    viewer: bool = Field(True, description="write viewer.html (slices, attention, heatmaps, lesions, predictions)")
    dicom_outputs: bool = Field(True, description="for a DICOM series, also write the results as DICOM (SR, key "
                                "object selection, parametric map of the heatmaps) into dicom/")
    top_k: int = Field(6, ge=1, description="slices in the attention montage, the DICOM key object selection and "
                       "the instances with heatmaps")
    heatmaps: bool = Field(True, description="heatmaps of every target over the top-k attended slices: "
                           "heatmaps/<scan_id>.h5 and PNG overlays (docs/interpret.md)")
    heatmap_method: HeatmapMethod = _heatmap_method()
    batch_size: int = Field(64, ge=1, description="slices per encoder forward pass")
    device: str = _device()


class DemoConfig(CommandConfig):
    """The whole pipeline on synthetic cohorts (clearct.workflows.demo). The sections left empty take the values of
    the ``--size`` preset, then the commands' own defaults."""

    out: Path = Field(Path("clearct-demo"), description="output folder of the demo")
    size: Literal["test", "small", "full"] = Field(
        "small", description="small: a laptop CPU; full: for a GPU; test: seconds, for the test suite"
    )
    patients: int | None = Field(None, ge=4, description="training cohort size (default: from --size)")
    external_patients: int | None = Field(None, ge=2, description="external cohort size (default: from --size)")
    supervised_epochs: int | None = Field(None, ge=1, description="epochs of the supervised ceiling (default: from "
                                          "--size)")
    synth: section(SynthSettings) = section_field(SynthSettings,  # type: ignore[valid-type]
        "clearct synth settings of both cohorts")
    pretrain: section(PretrainSettings) = section_field(  # type: ignore[valid-type]
        PretrainSettings, "clearct pretrain settings of the LECL arm (the "
        "supervised ceiling: the same, method supervised)")
    extract: section(ExtractSettings) = section_field(ExtractSettings,  # type: ignore[valid-type]
        "clearct extract settings of every arm")
    crossval: section(CrossvalSettings) = section_field(CrossvalSettings,  # type: ignore[valid-type]
        "clearct crossval settings of every arm and task")
    device: str = _device()
    seed: int = Field(0, description="random seed (the external cohort uses seed + 1)")


class ImportConfig(CommandConfig):
    # a plain str, checked by the importer: argparse cannot leave out a positional that has choices
    dataset: str = Field(**_positional("layout of ROOT: a registered importer, e.g. deeplesion, radchestct, nsclc "
                                       "(docs/datasets.md)"))
    root: Path = Field(**_positional("the dataset's folder as downloaded (images are not copied)"))
    out: Path = Field(..., description="folder for scans.csv, labels.csv (and lesions.csv, labels_patient.csv)")
    mapping: Path | None = Field(None, description="YAML file overriding the dataset's label/column mapping")
    clinical: Path | None = Field(None, description="nsclc: the clinical CSV (default: found below ROOT)")
    unlabelled: Literal["drop", "flag"] | None = Field(
        None, description="deeplesion: label rows of scans with untyped lesions: drop (the default), or flag "
        "(has_unlabelled=1)"
    )
    absolute_paths: bool = Field(False, description="write absolute scan paths (default: relative to --out)")


BENCHMARK_TASKS = ("location", "lung", "stage")


class BenchmarkConfig(CommandConfig):
    """The synthetic benchmark (docs/benchmark.md): the paper's encoder comparison. The sections left empty take
    the benchmark's preset (clearct.workflows.benchmark.PRESET), then the commands' own defaults."""

    out: Path = Field(..., description="output folder (cohorts, encoders, features, task results; a re-run resumes)")
    encoders: list[str] = Field(
        ["random", "moco", "lecl-1", "lecl-0", "supervised", "lecl-3", "lecl-5"],
        description="encoders compared, in run order: random, moco, lecl-<λ>, supervised (the ceiling), drasclr "
        "(lung task only; not in the default, docs/benchmark.md says why)",
    )
    tasks: list[str] = Field(list(BENCHMARK_TASKS), description="tasks: location, lung, stage")
    # --- cohorts ---
    patients: int = Field(1200, ge=10, description="training cohort: pretraining, lesion location and lung tasks")
    external_patients: int = Field(200, ge=4, description="external cohort (other seed and scanner) for the lung task")
    stage_patients: int = Field(200, ge=10, description="staging cohort (every patient has a primary lung tumour)")
    # --- per encoder family ---
    supervised_epochs: int = Field(3, ge=1, description="epochs of the supervised ceiling (an epoch of it covers "
                                   "the slices with lesion targets only)")
    drasclr_epochs: int = Field(1, ge=1, description="epochs of DrasCLR")
    stage_folds: int = Field(3, ge=2, description="outer = inner folds of the stage task's nested CV (folds² models)")
    # --- data-efficiency curves and the cost of one more task (docs/efficiency.md) ---
    curves: bool = Field(True, description="data-efficiency curves: each family trained on nested shares of the "
                         "labelled training patients, evaluated on one held-out test set per task")
    curve_shares: list[float] = Field([0.1, 0.25, 0.5, 1.0], description="shares of the training patients (0, 1]")
    curve_encoders: list[str] = Field(["lecl-1", "moco", "random", "supervised"],
                                      description="encoders whose CLEAR features get a curve (those not in encoders "
                                      "are skipped)")
    curve_tasks: list[str] = Field(["location", "lung"], description="tasks with curves (those not in tasks are "
                                   "skipped)")
    curve_folds: int = Field(3, ge=2, description="cross-validation folds inside each share (a curve is one "
                             "cross-validation per share, hence fewer than folds)")
    curve_finetune3d: bool = Field(True, description="add the end-to-end 3D fine-tune (clearct finetune3d) as a "
                                   "curve family")
    # --- the pretraining-steps axis: snapshots of one run, lesion location at each ---
    step_snapshots: list[int] = Field([75, 150, 300], description="optimizer steps at which each step encoder's "
                                      "pretraining exports a snapshot that is extracted and cross-validated on "
                                      "lesion location (empty: no steps axis); each must lie within the run")
    step_encoders: list[str] = Field(["lecl-1", "moco", "supervised"], description="pretrained encoders with a "
                                     "steps axis (those not in encoders are skipped)")
    # --- the commands' settings ---
    synth: section(SynthSettings) = section_field(SynthSettings,  # type: ignore[valid-type]
        "clearct synth settings of every cohort")
    pretrain: section(PretrainSettings) = section_field(  # type: ignore[valid-type]
        PretrainSettings, "clearct pretrain settings of every encoder (method "
        "and λ come from the encoder's name)")
    extract: section(ExtractSettings) = section_field(ExtractSettings,  # type: ignore[valid-type]
        "clearct extract settings of every feature set")
    crossval: section(CrossvalSettings) = section_field(CrossvalSettings,  # type: ignore[valid-type]
        "clearct crossval settings of every task")
    finetune3d: section(Finetune3dSettings) = section_field(  # type: ignore[valid-type]
        Finetune3dSettings, "clearct finetune3d settings of the curves' 3D "
        "family")
    device: str = _device()
    seed: int = Field(0, description="random seed (cohorts use seed, seed + 1, seed + 2)")

    @field_validator("curve_shares")
    @classmethod
    def _shares_in_range(cls, value: list[float]) -> list[float]:
        if not value or min(value) <= 0 or max(value) > 1:
            raise ValueError(f"curve_shares must lie in (0, 1], got {value}")
        return sorted(set(value))

    @field_validator("step_snapshots")
    @classmethod
    def _steps_positive(cls, value: list[int], info: ValidationInfo) -> list[int]:
        return optimizer_steps(value, info)

    @field_validator("tasks", "curve_tasks")
    @classmethod
    def _known_tasks(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(BENCHMARK_TASKS))
        if unknown:
            raise ValueError(f"unknown task(s) {', '.join(unknown)} ({', '.join(BENCHMARK_TASKS)})")
        return value


class ScansConfig(CommandConfig):
    root: Path = Field(**_positional("a study tree: DICOM files in any folder layout (a PACS or study export)"))
    out: Path = Field(..., description="the scans.csv to write (every series found goes to <stem>-series.csv "
                      "beside it)")
    series_per_study: Literal["one", "all"] = Field(
        "one", description="one: a row per study, the series the default rule picks (docs/inputs.md); all: a "
        "row per CT series")
    absolute_paths: bool = Field(False, description="write absolute paths (default: relative to the table)")
    overwrite: bool = Field(False, description="replace existing tables")


class EncodersConfig(CommandConfig):
    """``clearct encoders`` takes no settings: it lists the registry."""


class InitConfig(CommandConfig):
    path: Path = Field(Path("clearct.yaml"), **_positional("where to write the commented YAML config"))
    overwrite: bool = Field(False, description="replace an existing file")


COMMANDS: dict[str, tuple[type[CommandConfig], str, str]] = {
    # name: (config model, "module:function" that runs it, one-line help)
    "info": (InfoConfig, "clearct.io.info:run_info", "print what clearct reads from a scan"),
    "scans": (ScansConfig, "clearct.io.scans:run_scans", "write scans.csv for a tree of DICOM studies"),
    "encoders": (EncodersConfig, "clearct.encoders.listing:run_encoders",
                 "list the encoders (registry, families, baselines and where their weights come from)"),
    "synth": (SynthConfig, "clearct.synth.cohort:run_synth", "write a synthetic phantom CT cohort"),
    "pretrain": (PretrainConfig, "clearct.pretrain.train:run_pretrain", "pretrain a slice encoder (MoCo v3 / LECL)"),
    "extract": (ExtractConfig, "clearct.extract.run:run_extract", "embed every slice with a frozen encoder"),
    "crossval": (CrossvalConfig, "clearct.inference.review:run_crossval", "cross-validate attention-MIL models"),
    "finetune3d": (Finetune3dConfig, "clearct.finetune3d.run:run_finetune3d",
                   "the end-to-end 3D CNN baseline with crossval's folds and outputs"),
    "deploy": (DeployConfig, "clearct.inference.deploy:run_deploy", "apply a fold ensemble to an external cohort"),
    "predict": (PredictConfig, "clearct.inference.predict:run_predict", "predict one scan with a trained model"),
    "attention": (AttentionConfig, "clearct.inference.attention:run_attention",
                  "attention over slices per scan, figures"),
    "demo": (DemoConfig, "clearct.workflows.demo:run_demo", "run the whole pipeline on a synthetic cohort"),
    "import": (ImportConfig, "clearct.importers:run_import", "turn DeepLesion / RAD-ChestCT / NSCLC into tables"),
    "benchmark": (BenchmarkConfig, "clearct.workflows.benchmark:run_benchmark",
                  "the paper's encoder comparison on synthetic cohorts (tables, λ plot)"),
    "init": (InitConfig, "clearct.config_template:run_init", "write a commented YAML config for every command"),
}


def command_function(command: str) -> Any:
    """The Python function that runs ``command`` (imported on first use: its stage may import torch)."""
    from importlib import import_module

    module, name = COMMANDS[command][1].split(":")
    return getattr(import_module(module), name)
