"""``clearct import DATASET ROOT --out DIR``: the paper's public datasets in their native layouts → cohort tables.

One module per dataset (:mod:`~clearct.importers.deeplesion`, :mod:`~clearct.importers.radchestct`,
:mod:`~clearct.importers.nsclc`), each registering an importer (:mod:`~clearct.importers.registry`) that returns an
:class:`~clearct.importers.common.ImportResult`; images are never copied, scans.csv points at them.
docs/datasets.md has the layouts, mappings and the tasks' commands.
"""

from __future__ import annotations

import logging

from clearct.common.runs import start_run
from clearct.config import ImportConfig
from clearct.importers.common import ImportResult, report_lines, write_tables
from clearct.importers.deeplesion import import_deeplesion
from clearct.importers.nsclc import import_nsclc
from clearct.importers.radchestct import import_radchestct
from clearct.importers.registry import import_dataset, list_importers, register_importer

LOG = logging.getLogger("clearct")

__all__ = ["ImportResult", "import_dataset", "import_deeplesion", "import_nsclc", "import_radchestct",
           "list_importers", "register_importer", "run_import"]


def run_import(cfg: ImportConfig) -> int:
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
