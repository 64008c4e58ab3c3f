"""Training methods. Importing this package registers every method module in it (one file per method)."""

import importlib
import pkgutil

from avbias.methods.registry import METHODS, Method, create_method, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "registry":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "Method", "create_method", "register"]
