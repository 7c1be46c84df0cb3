"""The results of ``clearct predict`` on a DICOM series as DICOM objects (highdicom), next to the source study:

- ``sr.dcm``: a Comprehensive SR holding a TID 1500 Measurement Report: one measurement group per model output
  with the ensemble's probability, the decision threshold, the call at it (Present/Absent) and the algorithm
  (model folder, fold models, encoder name, weights sha256, image size, clearct version), with the source series
  as evidence and every source image in the report's image library;
- ``kos.dcm``: a Key Object Selection ("Of Interest") of the ``top_k`` slices the MIL attention weighs most;
- ``pm-<target>-<window>.dcm``: when the scan has a heatmap file, each target's maps as a Parametric Map (32-bit
  float pixels) on the source images' grid, one frame per source slice that has a map.

Every object references the source instances by their SOP Instance UIDs, found by re-reading the series headers
in the reader's slice order (``io.dicom.source_slices``). docs/interpret.md "Results as DICOM" says why these
IODs and what dciodvfy reports for them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from clearct import __version__
from clearct.common.atomic import atomic_path
from clearct.common.errors import ClearctError
from clearct.io.dicom import SourceSlices, source_slices
from clearct.io.heatmaps import ScanHeatmaps, read_heatmaps
from clearct.io.volume import CTVolume
from clearct.modeling.store import Ensemble
from clearct.report.viewer import Prediction

LOCAL_SCHEME = "99CLEARCT"  # a private coding scheme (the "99" prefix): clearct's targets have no standard codes
MANUFACTURER = "clearct"
SERIES_NUMBERS = {"sr": 901, "kos": 902, "pm": 903}


@dataclass
class Provenance:
    """What made the results: recorded in every object (algorithm identification, device, software version)."""

    model_folder: str
    fold_models: int
    encoder: str
    weights_sha256: str
    image_size: int | None
    task: str

    @classmethod
    def of(cls, ensemble: Ensemble, folder: Path) -> Provenance:
        enc = ensemble.encoder
        return cls(str(Path(folder).resolve()), len(ensemble.models), str(enc.get("encoder", "")),
                   str(enc.get("weights_sha256", "")), enc.get("image_size"), ensemble.spec.kind)

    def parameters(self) -> list[str]:
        return [f"model folder={self.model_folder}", f"fold models={self.fold_models}", f"task={self.task}",
                f"encoder={self.encoder}", f"encoder weights sha256={self.weights_sha256}",
                f"encoder image size={self.image_size}"]


def _hd():
    import highdicom

    return highdicom


def _code(value: str, meaning: str):
    """A concept of clearct's private scheme (code values are at most 16 characters)."""
    return _hd().sr.CodedConcept(value=re.sub(r"[^A-Za-z0-9_.-]", "_", value)[:16] or "X",
                                 scheme_designator=LOCAL_SCHEME, meaning=meaning[:64])


# Type 2 attributes of the Patient and General Study modules that highdicom copies from the evidence; a source
# without them (stripped exports, phantoms) gets them empty in memory, which is what an absent Type 2 value means
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
          "AccessionNumber", "ReferringPhysicianName")


_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def _complete(source: SourceSlices) -> SourceSlices:
    for ds in source.datasets:
        if "SpecificCharacterSet" in ds and not ds.SpecificCharacterSet:  # empty = the default repertoire
            del ds.SpecificCharacterSet
        for keyword in _TYPE2:
            if keyword not in ds:
                setattr(ds, keyword, "")
    return source


# PS3.16 Annex L defined terms of BodyPartExamined for body CT → their CID 4031 region
_BODY_PARTS = {"ABDOMENPELVIS": "AbdomenAndPelvis", "CHESTABDOMEN": "ChestAndAbdomen",
               "CHESTABDPELVIS": "ChestAbdomenAndPelvis", "WHOLEBODY": "EntireBody", "HEADNECK": "HeadAndNeck"}


def _anatomy(source: SourceSlices, pm: Dataset) -> None:
    """Frame Anatomy (a CT body region is unpaired: FrameLaterality U) from the source's BodyPartExamined; with
    no recognisable body part the laterality is honestly unknown: Laterality present and empty (Type 2C)."""
    part = re.sub(r"[^A-Z]", "", str(source.datasets[0].get("BodyPartExamined", "") or "").upper())
    by_name = {name.upper(): name for name in dir(codes.cid4031)}
    name = _BODY_PARTS.get(part) or by_name.get(part)
    if name is None:
        pm.Laterality = ""
        return
    code = getattr(codes.cid4031, name)
    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = code.value, code.scheme_designator, code.meaning
    anatomy = Dataset()
    anatomy.AnatomicRegionSequence = [region]
    anatomy.FrameLaterality = "U"
    pm.SharedFunctionalGroupsSequence[0].FrameAnatomySequence = [anatomy]


def _save(ds: Dataset, target: Path) -> Path:
    with atomic_path(target, suffix=".dcm.tmp") as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return target


def _device(prov: Provenance):
    hd = _hd()
    return hd.sr.ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="clearct attention-MIL ensemble", manufacturer_name=MANUFACTURER,
            model_name=f"{Path(prov.model_folder).name} ({prov.fold_models} fold models)"[:64],
            serial_number=prov.weights_sha256[:16]))


def _algorithm(prov: Provenance, threshold: float | None):
    extra = [f"decision threshold={threshold:.6g}"] if threshold is not None else []
    return _hd().sr.AlgorithmIdentification(name="clearct attention-MIL ensemble", version=__version__,
                                            parameters=prov.parameters() + extra, manufacturer=MANUFACTURER)


def structured_report(source: SourceSlices, predictions: Sequence[Prediction], prov: Provenance) -> Dataset:
    """TID 1500 Measurement Report in a Comprehensive SR: per output its probability, threshold and call."""
    hd = _hd()
    groups = []
    for p in predictions:
        target = _code(p.name, p.name)
        measurements = [hd.sr.Measurement(name=codes.DCM.Probability, value=float(p.score), unit=codes.UCUM.NoUnits,
                                          algorithm_id=_algorithm(prov, p.threshold))]
        evaluations = []
        if p.threshold is not None:
            measurements.append(hd.sr.Measurement(name=_code("THRESHOLD", "Decision threshold"),
                                                  value=float(p.threshold), unit=codes.UCUM.NoUnits))
        if isinstance(p.call, bool):
            evaluations.append(hd.sr.QualitativeEvaluation(name=target,
                                                           value=codes.SCT.Present if p.call else codes.SCT.Absent))
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"clearct {p.name}"[:64]),
            finding_type=target, algorithm_id=_algorithm(prov, p.threshold), measurements=measurements,
            qualitative_evaluations=evaluations or None))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=_device(prov)),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion, imaging_measurements=groups,
        referenced_images=source.datasets)
    return hd.sr.ComprehensiveSR(
        evidence=source.datasets, content=report[0], series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBERS["sr"], sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer=MANUFACTURER, series_description="clearct predictions", is_complete=True, is_final=False,
        is_verified=False, coding_schemes=[hd.coding_schemes.CodingSchemeIdentificationItem(
            designator=LOCAL_SCHEME, name="clearct model outputs and parameters",
            responsible_organization="clearct")])


def top_slices(slice_index: np.ndarray, attention: np.ndarray, n_slices: int, k: int) -> list[int]:
    """The ``k`` slices with the most attention (summed over a slice's instances, e.g. its windows), highest
    first; ties keep slice order."""
    per_slice = np.zeros(n_slices)
    valid = (slice_index >= 0) & (slice_index < n_slices)
    np.add.at(per_slice, slice_index[valid], attention[valid])
    order = np.argsort(-per_slice, kind="stable")
    return [int(s) for s in order[:k] if per_slice[s] > 0]


def key_object_selection(source: SourceSlices, slices: Sequence[int], prov: Provenance) -> Dataset:
    """KOS "Of Interest" of ``slices`` (most attended first)."""
    hd = _hd()
    chosen = [source.datasets[s] for s in slices]
    content = hd.ko.KeyObjectSelection(
        document_title=codes.DCM.OfInterest, referenced_objects=chosen, observer_device_context=_device(prov),
        description=(f"The {len(chosen)} slices the attention-MIL ensemble attended to most, highest first "
                     f"(clearct {__version__})")[:1024])
    return hd.ko.KeyObjectSelectionDocument(
        evidence=chosen, content=content, series_instance_uid=hd.UID(), series_number=SERIES_NUMBERS["kos"],
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER)


def parametric_maps(source: SourceSlices, maps: ScanHeatmaps, prov: Provenance) -> dict[str, Dataset]:
    """One Parametric Map per (target, heatmap window): float frames on the source slices' own grid."""
    hd = _hd()
    out: dict[str, Dataset] = {}
    for w, (window, _, _) in enumerate(maps.windows):
        rows = np.flatnonzero(maps.window == w)
        if not len(rows):
            continue
        rows = rows[np.argsort(maps.slice_index[rows], kind="stable")]
        slices = [int(s) for s in maps.slice_index[rows]]
        if len(set(slices)) != len(slices) or min(slices) < 0 or max(slices) >= len(source.datasets):
            raise ClearctError(f"heatmaps of {maps.scan_id}: slice indices of window {window} repeat or fall "
                               f"outside the {len(source.datasets)} slices")
        images = [source.datasets[s] for s in slices]
        for t, target in enumerate(maps.targets):
            frames = np.stack([source.to_source_plane(maps.maps[k, t].astype(np.float32)) for k in rows])
            lo, hi = float(frames.min()), float(frames.max())
            mapping = hd.pm.RealWorldValueMapping(
                lut_label=re.sub(r"[^A-Za-z0-9_]", "_", target)[:16] or "map",
                lut_explanation=f"{maps.method} of {target} at {maps.layer}"[:64], unit=codes.UCUM.NoUnits,
                value_range=(lo, hi if hi > lo else lo + 1.0), slope=1.0, intercept=0.0)
            out[f"{target}-{window}"] = hd.pm.ParametricMap(
                source_images=images, pixel_array=frames, series_instance_uid=hd.UID(),
                series_number=SERIES_NUMBERS["pm"] + len(out), sop_instance_uid=hd.UID(), instance_number=1,
                manufacturer=MANUFACTURER, manufacturer_model_name="clearct attention-MIL ensemble",
                software_versions=__version__, device_serial_number=prov.weights_sha256[:16],
                contains_recognizable_visual_features=False, real_world_value_mappings=[mapping],
                # LINEAR_EXACT: a window narrower than 1 is the norm for maps of values in [0, 1]
                voi_lut_transformations=[hd.VOILUTTransformation(window_center=(lo + hi) / 2,
                                                                 window_width=max(hi - lo, 1e-3),
                                                                 voi_lut_function="LINEAR_EXACT")],
                content_label=re.sub(r"[^A-Z0-9_]", "_", f"{maps.method}_{target}".upper())[:16],
                content_description=(f"{maps.method} of {target} ({window} window, {maps.encoder}, "
                                     f"layer {maps.layer})")[:64],
                series_description=f"clearct {maps.method} {target} {window}"[:64])
            _anatomy(source, out[f"{target}-{window}"])
    return out


def _file_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def write_dicom_outputs(folder: Path, volume: CTVolume, *, series: str | None, predictions: Sequence[Prediction],
                        slice_index: np.ndarray, attention: np.ndarray, provenance: Provenance,
                        heatmaps: Path | None = None, top_k: int = 6) -> dict[str, Path]:
    """Write sr.dcm, kos.dcm and (with a heatmap file) pm-*.dcm for a CTVolume read from a DICOM series."""
    source = _complete(source_slices(volume.source, series=series))
    if len(source.datasets) != volume.hu.shape[0] or not np.allclose(source.z_mm, volume.z_mm, atol=1e-3):
        raise ClearctError(f"the series has {len(source.datasets)} slices but the scan read has "
                           f"{volume.hu.shape[0]} (an undecodable slice?): slice references would be wrong",
                           volume.source)
    maps = read_heatmaps(heatmaps) if heatmaps is not None and Path(heatmaps).is_file() else None
    needed = _UIDS + (("FrameOfReferenceUID",) if maps is not None else ())  # maps are placed in its space
    blank = sorted({k for ds in source.datasets for k in needed if not str(ds.get(k, "") or "")})
    if blank:
        raise ClearctError(f"the series has no {', '.join(blank)} (blanked by an anonymiser?): DICOM results could "
                           "not reference their source", volume.source)
    folder = Path(folder)
    written = {"sr": _save(structured_report(source, predictions, provenance), folder / "sr.dcm")}
    slices = top_slices(np.asarray(slice_index), np.asarray(attention), volume.hu.shape[0], top_k)
    if slices:
        written["kos"] = _save(key_object_selection(source, slices, provenance), folder / "kos.dcm")
    if maps is not None:
        for name, ds in parametric_maps(source, maps, provenance).items():
            written[f"pm-{name}"] = _save(ds, folder / f"pm-{_file_part(name)}.dcm")
    return written
