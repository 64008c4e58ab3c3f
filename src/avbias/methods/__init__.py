"""Training methods. Importing this package registers every method module in it (one file per method);
method files import torch lazily, so reading the registry is cheap (the Snakefile does)."""

import importlib
import pkgutil

from avbias.methods.registry import (
    METHODS,
    Method,
    check_method_params,
    create_method,
    method_class,
    register,
    resolve_hyperparams,
    run_list,
    run_methods,
    run_params,
    run_seeds,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "registry":
        importlib.import_module(f"{__name__}.{_module.name}")


def run_params_json(params: dict, method: str, dataset: str) -> str:
    import json

    return json.dumps(run_params(params, method, dataset), sort_keys=True)


__all__ = ["METHODS", "Method", "check_method_params", "create_method", "method_class", "register",
           "resolve_hyperparams", "run_list", "run_methods", "run_params", "run_params_json", "run_seeds"]
