"""Which CT series to read when a DICOM folder holds several: a selector, or the default rule.

A **selector** names one series: its SeriesInstanceUID, ``number:N`` (its SeriesNumber) or ``index:K`` (the K-th,
1-based, in the order :func:`listing` gives and ``clearct info`` prints: by SeriesNumber, then UID). The last two
pick a series that has no SeriesInstanceUID. ``auto`` (or no selector) applies the **default rule** (docs/inputs.md):

1. the series must belong to one study (PatientID and StudyInstanceUID); several studies under one folder are
   refused, since no rule can tell which patient or date was meant;
2. localizers (scouts: ImageType LOCALIZER) are never chosen, nor single images while a series with more exists;
3. axial before other orientations, and original before derived (reformats, MIPs: ImageType DERIVED/SECONDARY)
   — the slice encoders read axial slices, and a reformat repeats an acquisition already there;
4. the largest z coverage, because a whole-scan model must see every slice where a finding may lie; coverages
   within :data:`COVERAGE_TOLERANCE_MM` or :data:`COVERAGE_TOLERANCE_SHARE` of the largest count as equal (two
   reconstructions of one acquisition end a few millimetres apart);
5. among those, the thinnest slices (the most detail; a thick reconstruction of the same range adds nothing), then
   the most images, then the lowest SeriesNumber, then the UID, so the choice never depends on file order.

The chosen series and the rule that chose it go into the volume's ``meta`` (``series_uid``, ``series_selector``,
``series_rule``) and its warnings, and from there into the feature file's attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clearct.common.errors import ClearctError

AUTO = "auto"
COVERAGE_TOLERANCE_MM = 10.0
COVERAGE_TOLERANCE_SHARE = 0.05
RULE = ("default rule: the axial, original CT series with the largest z coverage, then the thinnest slices, then "
        "the most images (localizers never)")
SELECTOR_HELP = "a SeriesInstanceUID, number:N (SeriesNumber) or index:K (as clearct info lists them)"


@dataclass(frozen=True)
class SeriesInfo:
    """What the choice of a series looks at; ``key`` is what groups its images (the UID, else ``number:N``, else
    empty). ``patient`` and ``study`` only tell studies apart and are never written to a volume's meta."""

    key: str
    uid: str
    number: int | None
    description: str
    images: int
    thickness_mm: float | None
    coverage_mm: float
    axial: bool
    localizer: bool
    derived: bool
    study: str
    patient: str

    def label(self) -> str:
        return self.uid or self.key or "(no SeriesInstanceUID or SeriesNumber)"


def listing(infos: list[SeriesInfo]) -> list[SeriesInfo]:
    """The series in the order selectors count them (``index:K``): by SeriesNumber (none last), then key."""
    return sorted(infos, key=lambda i: (i.number is None, i.number or 0, i.key))


def describe(infos: list[SeriesInfo]) -> str:
    """``[1] number:2 1.2.3 (20 slices, 'CT Body 3.0'); …`` in :func:`listing` order."""
    parts = []
    for k, info in enumerate(listing(infos), 1):
        number = f"number:{info.number} " if info.number is not None else ""
        desc = f", {info.description!r}" if info.description else ""
        shape = "" if info.axial else ", not axial"
        kind = ", localizer" if info.localizer else ", derived" if info.derived else ""
        thick = f", {info.thickness_mm:g} mm" if info.thickness_mm else ""
        uid = info.uid or "(no SeriesInstanceUID)"
        parts.append(f"[{k}] {number}{uid} ({info.images} slices{desc}{thick}{shape}{kind})")
    return "; ".join(parts)


def selector_of(info: SeriesInfo, infos: list[SeriesInfo]) -> str:
    """The selector that picks ``info`` again from the same folder."""
    if info.uid:
        return info.uid
    if info.number is not None and sum(i.number == info.number for i in infos) == 1:
        return f"number:{info.number}"
    return f"index:{listing(infos).index(info) + 1}"


def _by_rule(infos: list[SeriesInfo]) -> SeriesInfo:
    pool = [i for i in infos if not i.localizer] or list(infos)
    pool = [i for i in pool if i.images > 1] or pool
    best = min((not i.axial, i.derived) for i in pool)
    pool = [i for i in pool if (not i.axial, i.derived) == best]
    widest = max(i.coverage_mm for i in pool)
    slack = max(COVERAGE_TOLERANCE_MM, COVERAGE_TOLERANCE_SHARE * widest)
    pool = [i for i in pool if i.coverage_mm >= widest - slack]
    return min(pool, key=lambda i: (i.thickness_mm or float("inf"), -i.images, i.number is None, i.number or 0,
                                    i.key))


def choose(infos: list[SeriesInfo], selector: str | None, where: str | Path) -> tuple[SeriesInfo, str]:
    """The series ``selector`` names (or the default rule's choice) and how it was chosen, in words; a
    ClearctError naming ``where`` and listing the series when the selector matches none, or several studies
    leave the choice open."""
    if not infos:
        raise ClearctError("no CT series", where)
    text = (selector or AUTO).strip()
    found = describe(infos)
    if text == AUTO:
        if len(infos) == 1:
            return infos[0], "the only CT series"
        studies = {(i.patient, i.study) for i in infos}
        if len(studies) > 1:
            raise ClearctError(f"{len(infos)} CT series of {len(studies)} studies below one folder; point at one "
                               f"study, or pick a series with --series ({SELECTOR_HELP}): {found}", where)
        return _by_rule(infos), RULE
    kind, _, value = text.partition(":")
    if kind in ("index", "number") and value.strip().lstrip("-").isdigit():
        n = int(value)
        if kind == "index":
            if not 1 <= n <= len(infos):
                raise ClearctError(f"series index:{n} not found: {len(infos)} CT series here: {found}", where)
            return listing(infos)[n - 1], f"selected by index:{n}"
        matches = [i for i in infos if i.number == n]
        if len(matches) != 1:
            what = "not found" if not matches else f"is SeriesNumber of {len(matches)} series"
            raise ClearctError(f"series number:{n} {what}; series here: {found}", where)
        return matches[0], f"selected by number:{n}"
    matches = [i for i in infos if text in (i.uid, i.key)]
    if not matches:
        raise ClearctError(f"series {text} not found; series here: {found}", where)
    return matches[0], "selected by SeriesInstanceUID"
