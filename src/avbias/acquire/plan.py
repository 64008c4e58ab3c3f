"""What a run is about to download, said before it starts (the Snakefile prints it ahead of the DAG).

Pure and light: reads params and the packaged manifests, checks which index folders exist, and touches no
network (no torch, no media).
"""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

# Kinetics-400 as the CVDF serves it: the tarballs of all three splits, and what is kept of them.
K400_TARBALLS_GB = 436
KS_KEPT_GB = 20
WIDTH = 100                         # characters per line of the note
DOWNLOADING_SOURCES = {"cremad": ("download",), "kinetics_sounds": ("cvdf", "yt_dlp")}


def _host(url: str | None) -> str:
    return (urlsplit(url).netloc or url) if url else "?"


def _gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f} GB"


def _cremad(cfg: dict[str, Any]) -> list[str]:
    from avbias.acquire import cremad
    from avbias.errors import DataError

    try:
        manifest = cremad.media_manifest(cfg.get("manifest"))
        what = f"{len(manifest):,} media files, {_gb(float(manifest['size'].sum()))}"
    except (DataError, OSError, ValueError) as exc:
        log.debug("CREMA-D manifest unreadable: %s", exc)
        what = "the media files listed in acquire.cremad.manifest"
    hosts = [_host(cfg.get("base_url"))]
    if _host(cfg.get("metadata_url")) not in hosts:
        hosts.append(f"{_host(cfg.get('metadata_url'))} (metadata)")
    return [f"CREMA-D: {what} (each sha256-verified) from {', '.join(hosts)}"]


def _kinetics(cfg: dict[str, Any]) -> list[str]:
    host = _host(cfg.get("base_url"))
    if cfg["source"] == "cvdf":
        kept = ("each tarball deleted once its Kinetics-Sounds clips are extracted" if cfg.get("delete_tarballs", True)
                else "tarballs kept (acquire.kinetics_sounds.delete_tarballs: false)")
        return [f"Kinetics-400 tarballs from {host}: ~{K400_TARBALLS_GB} GB downloaded for all of K400, of which "
                f"the Kinetics-Sounds clips are kept (~{KS_KEPT_GB} GB); {kept}"]
    try:
        from avbias.acquire import kinetics_sounds

        clips = f"{len(kinetics_sounds.load_split(cfg.get('split_file'))[1]):,} clips"
    except Exception as exc:                        # a bad split file is the acquire job's to report
        log.debug("Kinetics-Sounds split unreadable: %s", exc)
        clips = "the split's clips"
    return [f"Kinetics-Sounds clip by clip from www.youtube.com with yt-dlp: {clips}, 10 s each at up to 480p "
            "(a few MB per clip; videos no longer on YouTube are missing)"]


def _item(text: str, indent: str) -> str:
    return textwrap.fill(text, WIDTH, initial_indent=f"{indent}- ", subsequent_indent=f"{indent}  ",
                         break_on_hyphens=False, break_long_words=False)


def acquisition_note(params: dict[str, Any]) -> str | None:
    """A one-screen note on the datasets this run will download (index folder absent, downloading source):
    what, how big, from which hosts, stored where, and how to use local copies instead. None: no download."""
    data = Path(params["paths"]["data"])
    acquire = params.get("acquire", {})
    sections: list[str] = []
    local: list[str] = []
    for dataset in params["run"]["datasets"]:
        cfg = acquire.get(dataset)
        if cfg is None or cfg.get("source") not in DOWNLOADING_SOURCES.get(dataset, ()):
            continue
        if (data / "raw" / dataset).exists():
            continue
        lines = _cremad(cfg) if dataset == "cremad" else _kinetics(cfg)
        lines.append(f"stored in {data / 'sources' / dataset} (kept across runs: an interrupted download resumes)")
        sections.append(f"  {dataset} (acquire.{dataset}.source: {cfg['source']}):\n"
                        + "\n".join(_item(line, "    ") for line in lines))
        copy = ("a CREMA-D checkout (git lfs clone + git lfs pull)" if dataset == "cremad"
                else "a Kinetics-400 tree (<split>/<ytid>_<start>_<end>.mp4)")
        local.append(_item(f"acquire.{dataset}.source: local and acquire.{dataset}.local_root: {copy}", "  "))
    if not sections:
        return None
    return "\n".join([
        "avbias: this run first downloads datasets that are not in place yet:",
        *sections,
        "To use copies you already have instead (params.yaml, or an override with --configfile):",
        *local,
        _item("or a mirror: acquire.<dataset>.base_url (and acquire.cremad.metadata_url) at your server", "  "),
        _item("or no download at all: `make demo` (synthetic data), or run.datasets: [synth_cremad, synth_ks]", "  "),
        "Behind a proxy: set HTTPS_PROXY / HTTP_PROXY (NO_PROXY for hosts reached directly).",
        "A download that cannot reach its host stops within seconds and says why.",
    ])
