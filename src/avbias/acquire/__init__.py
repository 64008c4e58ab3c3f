"""The acquire stage: fetch, verify or generate a dataset's media, and index its clips.

The stage's output folder (data/raw/<dataset>) holds the index, not necessarily the media:
  clips.csv      clip_id, label_name, group, official_split, audio_path, video_path (relative to this folder,
                 or absolute when outside the working tree)
  acquire.json   source, classes, counts, excluded clips, coverage, download counts
  data_report.md the same, for people
Downloaded media live in a store beside it (data/sources/<dataset>), outside any rule's outputs, so a failed
or interrupted run keeps them and the next run resumes; a local checkout is used in place.

sources.py          per family and source: the media found or fetched, the index rows
download.py         HTTP downloads: parallel, resumed, retried, verified (download_errors.py: what failed, for people)
cremad.py, kinetics_sounds.py, archive.py   the two datasets' sources; untrusted tar extraction
synthetic.py        the synthetic generator (mirror.py: a synthetic mirror of both download sources)
plan.py             what a run is about to download (the Snakefile prints it)
reference/          shipped facts: CREMA-D media checksums, literature splits

Importing this package costs nothing: `acquire` imports the modules when it runs (the Snakefile reads plan.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from avbias.acquire.download import DownloadPolicy

log = logging.getLogger(__name__)


def acquire(dataset: str, out_dir: str | Path, store: str | Path, params: dict[str, Any],
            policy: DownloadPolicy) -> dict[str, Any]:
    """`avbias acquire`: write data/raw/<dataset> (atomically): the clip index and the acquisition report."""
    from avbias.acquire.sources import CLIP_COLUMNS, acquire_cremad, acquire_kinetics, data_report, relative_path
    from avbias.datasets import CREMAD_EMOTIONS, DATASETS
    from avbias.errors import DataError
    from avbias.io import atomic_dir, write_json

    spec = DATASETS[dataset]
    out_dir, store = Path(out_dir), Path(store)
    store.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out_dir) as tmp:
        fetch = acquire_cremad if spec.family == "cremad" else acquire_kinetics
        table, info = fetch(spec, tmp, store, params, policy)
        if table.empty:
            raise DataError(f"{dataset}: no clips found; see {store}")
        for column in ("audio_path", "video_path"):
            table[column] = [relative_path(p, tmp) for p in table[column]]
        info = {"dataset": dataset, "classes": list(CREMAD_EMOTIONS), **info, "clips": len(table)}
        table[CLIP_COLUMNS].sort_values("clip_id").to_csv(tmp / "clips.csv", index=False)
        write_json(tmp / "acquire.json", info)
        (tmp / "data_report.md").write_text(data_report(dataset, info))
    log.info("%s: %d clips indexed from %s", dataset, len(table), info["source"])
    return info
