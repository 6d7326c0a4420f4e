"""Deferred imports for the modules that Snakemake imports while it plans the workflow.

Planning reads sdi.config.validation, sdi.data.readers, sdi.evaluation.summary and friends; numpy and pandas take
about a second to import and are needed only when a job (or a reader) runs. ``lazy_import``
returns the module at once and loads it on first attribute access (the standard library's
``importlib.util.LazyLoader``); an already imported module is returned as it is.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_import(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
