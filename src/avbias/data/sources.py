"""The acquire stage: where each dataset's raw media come from."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from avbias.data import synthetic
from avbias.data.datasets import DATASETS
from avbias.errors import DataError
from avbias.io import atomic_dir

log = logging.getLogger(__name__)


def acquire(dataset: str, out_dir: Path, params: dict[str, Any], workers: int = 1) -> None:
    spec = DATASETS[dataset]
    if spec.synthetic:
        with atomic_dir(out_dir) as tmp:
            clips = synthetic.generate(tmp, params["synth"], workers=workers)
        log.info("wrote %d synthetic clips to %s", len(clips), out_dir)
        return
    source = params["acquire"][dataset]["source"]
    raise DataError(
        f"acquire.{dataset}.source={source!r}: acquisition of the real {dataset} media is not available in "
        "this version of avbias; run the demo (config/demo.yaml) on the synthetic dataset instead"
    )
