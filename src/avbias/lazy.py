"""Modules imported on first use.

Method files name `torch` at the top like any PyTorch code, but reading the method registry (the Snakefile
does, to validate params and find a method's pretrained runs) must not pay torch's import (seconds per
`snakemake` call). These proxies import the real module when an attribute is first read.
"""

from __future__ import annotations

import importlib
import types
from typing import Any


class LazyModule(types.ModuleType):
    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self.__name__), attr)


torch: Any = LazyModule("torch")
F: Any = LazyModule("torch.nn.functional")
