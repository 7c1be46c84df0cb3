"""``clearct import DATASET ROOT --out DIR``: the paper's public datasets in their native layouts → cohort tables.

One module per dataset (:mod:`~clearct.importers.deeplesion`, :mod:`~clearct.importers.radchestct`,
:mod:`~clearct.importers.nsclc`), each returning an :class:`~clearct.importers.common.ImportResult`; images are
never copied, scans.csv points at them. docs/datasets.md has the layouts, mappings and the tasks' commands.
"""

from __future__ import annotations

import logging
from pathlib import Path

from clearct.common.errors import ClearctError
from clearct.common.runs import start_run
from clearct.importers.common import ImportResult, report_lines, write_tables
from clearct.importers.deeplesion import import_deeplesion
from clearct.importers.nsclc import import_nsclc
from clearct.importers.radchestct import import_radchestct

LOG = logging.getLogger("clearct")
DATASETS = ("deeplesion", "radchestct", "nsclc")

__all__ = ["DATASETS", "ImportResult", "import_dataset", "import_deeplesion", "import_nsclc", "import_radchestct",
           "run_import"]


def import_dataset(dataset: str, root: Path | str, *, mapping: Path | None = None, clinical: Path | None = None,
                   unlabelled: str = "drop") -> ImportResult:
    """Dispatch to the dataset's importer with the options it takes."""
    if dataset == "deeplesion":
        return import_deeplesion(root, mapping=mapping, unlabelled=unlabelled)
    if dataset == "radchestct":
        return import_radchestct(root, mapping=mapping)
    if dataset == "nsclc":
        return import_nsclc(root, mapping=mapping, clinical=clinical)
    raise ClearctError(f"unknown dataset {dataset!r}; one of {', '.join(DATASETS)}")


def run_import(cfg) -> int:
    """The ``clearct import`` command: read ROOT, write the tables into ``--out``, print the counts."""
    result = import_dataset(cfg.dataset, cfg.root, mapping=cfg.mapping, clinical=cfg.clinical,
                            unlabelled=cfg.unlabelled)
    out = start_run(cfg.out, "import", cfg)
    written = write_tables(result, out, absolute=cfg.absolute_paths)
    written.append(result.failures.write(out / "failures.csv"))
    for line in report_lines(result):
        LOG.info(line)
        print(line)
    print(f"wrote {', '.join(p.name for p in written)} in {out}")
    return 1 if result.failures else 0
