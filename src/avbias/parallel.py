"""Process pools for the clip-parallel stages."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor


def process_pool(workers: int, initializer: Callable[[], None] | None = None) -> ProcessPoolExecutor:
    """Workers started from a clean fork server: forking a parent that has already run torch's
    (OpenMP) thread pool can deadlock the child."""
    context = multiprocessing.get_context("forkserver")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=initializer)
