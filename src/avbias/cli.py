"""The `avbias` command: one subcommand per pipeline stage, each calling the stage's entry of the same name
(avbias.<stage>.<stage>). Snakemake rules call these."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from avbias.config import load_params, parse_params_json
from avbias.errors import AvbiasError

log = logging.getLogger("avbias")


def cmd_acquire(args: argparse.Namespace, params: dict[str, Any]) -> None:
    from avbias.acquire import acquire
    from avbias.acquire.download import DownloadPolicy

    policy = DownloadPolicy(connections=args.threads, retries=args.retries, timeout_s=args.timeout,
                            backoff_s=args.backoff)
    acquire(args.dataset, Path(args.out), Path(args.store), params, policy)


def cmd_synth(args: argparse.Namespace, _: dict[str, Any]) -> None:
    from avbias.acquire import mirror, synthetic

    params = load_params(*args.config)["synth"]
    out = Path(args.out)
    if args.layout == "mirror":
        layout = mirror.write_mirror(out, params, args.threads)
        import yaml

        print("# Serve the folder (e.g. python -m http.server -d OUT 8000), then use these acquire params:")
        print(yaml.safe_dump({"acquire": mirror.acquire_overrides(layout, out.resolve(), "http://127.0.0.1:8000")}))
    else:
        clips = synthetic.generate(out, params, args.layout, args.threads)
        log.info("wrote %d synthetic clips to %s", len(clips), out)


def cmd_manifest(args: argparse.Namespace, params: dict[str, Any]) -> None:
    from avbias.manifest import manifest

    manifest(args.dataset, args.raw, args.out, params)


def cmd_extract(args: argparse.Namespace, params: dict[str, Any]) -> None:
    from avbias.extract import extract

    extract(args.dataset, args.manifest, args.out, params, workers=args.threads)


def cmd_train(args: argparse.Namespace, params: dict[str, Any]) -> None:
    from avbias.train import train

    metrics = train(args.dataset, args.method, args.seed, args.features, args.out, params, threads=args.threads,
                    pretrained=args.pretrained, in_memory=args.in_memory, num_workers=args.workers, gpus=args.gpus,
                    gpu_slots=args.gpu_slots)
    log.info("test accuracy %.4f (best epoch %d on validation)", metrics["test"]["acc"], metrics["best_epoch"])


def cmd_analyse(args: argparse.Namespace, params: dict[str, Any]) -> None:
    from avbias.analyse import analyse

    analyse(args.dataset, [Path(p) for p in args.runs], Path(args.out), params)


def cmd_report(args: argparse.Namespace, params: dict[str, Any]) -> None:
    from avbias.report import report

    report([Path(p) for p in args.analysis], [Path(p) for p in args.raw], [Path(p) for p in args.features],
           Path(args.out), Path(args.summary), Path(args.metrics), params)


def cmd_params(args: argparse.Namespace, _: dict[str, Any]) -> None:
    import yaml

    files = args.files or ["params.yaml"]
    params = load_params(*files)
    if args.describe:
        from avbias.config import describe_params, load_schema, splice_generated

        text = describe_params(load_schema(), params)
        if args.out and Path(args.out).exists():     # a page: only between its markers (an error without them)
            text = splice_generated(Path(args.out).read_text(), text)
    else:
        text = "# Merged from: " + ", ".join(files) + "\n" + yaml.safe_dump(params, sort_keys=False)
    if args.out:
        from avbias.io import atomic_path

        with atomic_path(args.out) as tmp:
            tmp.write_text(text)
    else:
        sys.stdout.write(text)


def cmd_push(args: argparse.Namespace, _: dict[str, Any]) -> None:
    from avbias.share import push

    push(args.remote, args.run_cache)


def cmd_pull(args: argparse.Namespace, _: dict[str, Any]) -> None:
    from avbias.share import pull

    pull(args.configfile, args.remote, args.run_cache)


def cmd_repair(args: argparse.Namespace, _: dict[str, Any]) -> None:
    from avbias.share import repair

    repair(args.configfile, args.targets)


def cmd_adopt(args: argparse.Namespace, _: dict[str, Any]) -> None:
    from avbias.share import adopt

    adopt(args.configfile)


def cmd_prune_runs(args: argparse.Namespace, _: dict[str, Any]) -> None:
    from avbias.share import prune_stale_runs

    prune_stale_runs(args.params_file, args.runs)


def cmd_compare_verdicts(args: argparse.Namespace, _: dict[str, Any]) -> None:
    from avbias.analyse.compare import FAILING, compare, conclusions
    from avbias.errors import AvbiasError

    diffs = compare(Path(args.first), Path(args.second))
    failing = [d for d in diffs if d.kind in FAILING]
    lines = "\n  ".join(str(d) for d in diffs)
    total = len(conclusions(Path(args.first)))
    if failing:
        raise AvbiasError(f"{len(failing)} of {total} conclusions differ between {args.first} and {args.second} "
                          f"beyond seed noise ({len(diffs) - len(failing)} more only straddle a threshold: p = 0.05, "
                          f"or the convergence check):\n  {lines}")
    print(f"same conclusions ({total}) in {args.first} and {args.second}"
          + (f", but for {len(diffs)} that straddle a threshold (p = 0.05, or the convergence check where both p "
             f"are below it) with estimates that agree within their seeds' "
             f"spread (avbias.analyse.compare):\n  {lines}" if diffs else ""))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avbias", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def stage(name: str, func: Callable[..., None], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--params", required=True, help="JSON object with the params groups this stage reads")
        p.set_defaults(func=func, stage=name)
        return p

    p = stage("acquire", cmd_acquire, "fetch, verify or generate a dataset's media and index its clips")
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True, help="index folder (data/raw/<dataset>)")
    p.add_argument("--store", required=True, help="where downloads live and resume (data/sources/<dataset>)")
    p.add_argument("--threads", type=int, default=1, help="parallel connections / encoder processes")
    p.add_argument("--retries", type=int, default=5, help="download attempts after the first, per file")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds without data before a download attempt fails")
    p.add_argument("--backoff", type=float, default=1.0, help="seconds before the first retry (doubles each time)")

    p = sub.add_parser("synth", help="write a synthetic dataset, or a synthetic mirror of the download sources")
    p.add_argument("--config", nargs="+", default=["params.yaml"], help="params.yaml and overrides (the synth group)")
    p.add_argument("--layout", choices=["cremad", "kinetics", "mirror"], required=True,
                   help="cremad: AudioWAV/ + VideoFlash/; kinetics: CVDF-named mp4s; mirror: both sources' URL layout")
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_synth, stage=None)

    p = stage("manifest", cmd_manifest, "clip manifest and splits")
    p.add_argument("--dataset", required=True)
    p.add_argument("--raw", required=True)
    p.add_argument("--out", required=True)

    p = stage("extract", cmd_extract, "decode media into feature shards")
    p.add_argument("--dataset", required=True, help="picks the extraction recipe (extract.<family>)")
    p.add_argument("--manifest", required=True, help="folder holding clips.parquet")
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=1)

    p = stage("train", cmd_train, "train one (dataset, method, seed) run")
    p.add_argument("--dataset", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--features", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--pretrained", nargs="*", default=[], help="model.pt of the runs the method builds on")
    p.add_argument("--in-memory", choices=["auto", "true", "false"], default="auto",
                   help="hold each split in (GPU) memory; false: read the memory-mapped shards per batch")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers when reading shards")
    p.add_argument("--gpus", type=int, default=0, help="GPUs this job may use (claims a free one on multi-GPU hosts)")
    p.add_argument("--gpu-slots", type=int, default=1,
                   help="training jobs per GPU (resources.train_gpu_slots): claims a free slot on the least-loaded "
                        "GPU and bounds this job's GPU memory to 1/slots (env AVBIAS_GPU_COUNT, AVBIAS_GPU_LOCK_DIR: "
                        "see avbias.train.gpu)")

    p = stage("analyse", cmd_analyse, "decision-layer analysis of a dataset's runs")
    p.add_argument("--dataset", required=True)
    p.add_argument("--runs", nargs="+", required=True, help="run folders (each with metrics.json, outputs.npz)")
    p.add_argument("--out", required=True)

    p = stage("report", cmd_report, "figures, report.html and summary.md")
    p.add_argument("--analysis", nargs="+", required=True, help="analysis folders, one per dataset")
    p.add_argument("--raw", nargs="+", required=True, help="acquire folders (data/raw/<dataset>), same order")
    p.add_argument("--features", nargs="+", required=True, help="feature folders (data/features/<dataset>), same order")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--summary", required=True, help="summary.md path")
    p.add_argument("--metrics", required=True, help="metrics.json path (DVC metrics)")

    def sharing(name: str, func: Callable[..., None], help_text: str, remote: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(func=func, stage=None)
        if remote:
            p.add_argument("--remote", help="DVC remote name (default: the configured default remote)")
            p.add_argument("--run-cache", action="store_true", help="also transfer DVC's run cache")
        return p

    sharing("push", cmd_push, "dvc push the artifacts of a clean workspace to the DVC remote", remote=True)
    p = sharing("pull", cmd_pull, "dvc pull, check dvc status is clean, make Snakemake agree (no job reruns)",
                remote=True)
    p.add_argument("--configfile", nargs="*", default=[], help="Snakemake config files (default: params.yaml)")
    p = sharing("repair", cmd_repair, "restore modified or missing artifacts from the DVC cache, then sync Snakemake")
    p.add_argument("targets", nargs="*", help="paths or stages to restore (default: all)")
    p.add_argument("--configfile", nargs="*", default=[], help="Snakemake config files (default: params.yaml)")
    p = sharing("adopt", cmd_adopt, "make DVC record what Snakemake built (e.g. after make demo): check snakemake "
                "has nothing to do, write the merged config into params.yaml, dvc commit")
    p.add_argument("--configfile", nargs="*", default=[],
                   help="the config files Snakemake ran with, e.g. params.yaml config/demo.yaml (default: "
                        "params.yaml); merged into params.yaml when they differ from it, as DVC reads only params.yaml")
    p = sharing("prune-runs", cmd_prune_runs, "delete runs trained with other model/train params (DVC train stage)")
    p.add_argument("--params-file", default="params.yaml")
    p.add_argument("--runs", required=True, help="the runs folder, e.g. results/runs")

    p = sub.add_parser("compare-verdicts", help="check two analyses of one dataset reach the same conclusions")
    p.add_argument("first", help="an analysis folder, e.g. results/demo/analysis/synth_cremad")
    p.add_argument("second", help="the same study's analysis from another run (other threads, oneDNN off)")
    p.set_defaults(func=cmd_compare_verdicts, stage=None)

    p = sub.add_parser("params", help="merge and validate parameter files; print or write the result")
    p.add_argument("files", nargs="*", help="params.yaml, then overrides (later ones win); default: params.yaml")
    p.add_argument("--out", help="write here instead of stdout (with --describe, an existing page is rewritten "
                                 "only between its generated-block markers)")
    p.add_argument("--describe", action="store_true",
                   help="print the settings reference instead: per key its type, default (the merged files) and "
                        "description (the schema), as Markdown; docs/configuration.md holds it")
    p.set_defaults(func=cmd_params, stage=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        params = parse_params_json(args.params, args.stage) if args.stage else {}
        args.func(args, params)
    except AvbiasError as exc:
        print(f"avbias: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
