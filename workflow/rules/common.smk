# Paths and helpers shared by the rules. Names of stages and their params groups come from the
# package, so Snakemake and DVC agree on what each stage reads.

from avbias.config import check_names, run_params_json, stage_params_json
from avbias.methods import create_method

check_names(config)

DATA = config["paths"]["data"]
RESULTS = config["paths"]["results"]
LOGS = config["paths"]["logs"]
DATASETS = config["run"]["datasets"]
METHODS = config["run"]["methods"]
SEEDS = config["run"]["seeds"]
THREADS = config["resources"]
ENV = "../envs/avbias.yaml"


wildcard_constraints:
    dataset=r"[a-z][a-z0-9_]*",
    method=r"[a-z][a-z0-9_]*",
    seed=r"\d+",


def stage_params(stage):
    """The JSON the stage's command receives; as a rule param it also triggers reruns when it changes."""
    return stage_params_json(config, stage)


def run_dir(dataset="{dataset}", method="{method}", seed="{seed}"):
    return f"{RESULTS}/runs/{dataset}/{method}/seed{seed}"


def pretrained_models(wildcards):
    """model.pt of the runs a method builds on (its `pretrained` runs), same dataset and seed."""
    needs = create_method(wildcards.method, config).pretrained
    return [f"{run_dir(wildcards.dataset, m, wildcards.seed)}/model.pt" for m in needs]


def dataset_runs(wildcards):
    return [f"{run_dir(wildcards.dataset, m, s)}/metrics.json" for m in METHODS for s in SEEDS]


def report_outputs():
    return [f"{RESULTS}/report/report.html", f"{RESULTS}/summary.md", f"{RESULTS}/metrics.json"]


def stage_targets(stage):
    """Every output of one stage, for all configured datasets/methods/seeds (the DVC stages' targets)."""
    per_dataset = {
        "acquire": [f"{DATA}/raw/{d}" for d in DATASETS],
        "manifest": [f"{DATA}/manifest/{d}/clips.parquet" for d in DATASETS],
        "extract": [f"{DATA}/features/{d}" for d in DATASETS],
        "train": [f"{run_dir(d, m, s)}/metrics.json" for d in DATASETS for m in METHODS for s in SEEDS],
        "analyse": [f"{RESULTS}/analysis/{d}/bias.json" for d in DATASETS],
    }
    return per_dataset[stage]
