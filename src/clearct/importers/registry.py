"""The importer registry: dataset name → a function ``(root, **options) -> ImportResult``.

A new dataset layout is one module that defines its importer and registers it with :func:`register_importer`
(plus its import line in :mod:`clearct.importers`); ``clearct import NAME ROOT`` then runs it and the tests run
over :func:`list_importers`. An importer declares, as keyword arguments, the options of ``clearct import`` it
uses (``mapping``, ``clinical``, ``unlabelled``); it is passed only those.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from clearct.common.errors import ClearctError
from clearct.common.registry import Registry
from clearct.importers.common import ImportResult

Importer = Callable[..., ImportResult]
IMPORTERS: Registry[Importer] = Registry("dataset")
register_importer = IMPORTERS.register
list_importers = IMPORTERS.names


def importer_options(name: str) -> list[str]:
    """The options of ``clearct import`` the importer ``name`` uses."""
    return [p for p in inspect.signature(IMPORTERS.get(name)).parameters if p != "root"]


def import_dataset(dataset: str, root: Any, **options: Any) -> ImportResult:
    """Run the importer of ``dataset`` with the ``options`` it declares; an option it does not use, given a value
    other than None, is an error (it would be ignored silently)."""
    run = IMPORTERS.get(dataset)
    takes = importer_options(dataset)
    unused = sorted(k for k, v in options.items() if v is not None and k not in takes)
    if unused:
        raise ClearctError(f"the {dataset} importer takes no {', '.join('--' + k for k in unused)}")
    return run(root, **{k: v for k, v in options.items() if k in takes and v is not None})
