# Names shared by the rules. Stage names, their params groups and a run's folder come from the package,
# so Snakemake and DVC agree on what each stage reads. Reading them imports no torch.

import shlex
import sysconfig

from snakemake.settings.types import DeploymentMethod

from avbias.config import stage_params_json
from avbias.train import run_dir
from avbias.methods import check_method_params, method_class, run_list, run_params_json

check_method_params(config)

DATA = config["paths"]["data"]
RESULTS = config["paths"]["results"]
LOGS = config["paths"]["logs"]
DATASETS = config["run"]["datasets"]
RUNS = run_list(config)          # (method, seed): run.seeds, or a method's own run.seeds_by_method
RESOURCES = config["resources"]
# The software of every rule: the locked venv running Snakemake by default, or, with
# --software-deployment-method conda, this environment (the same lock; workflow/envs/).
AVBIAS_ENV = "../envs/avbias.yaml"
# By default rules call the `avbias` installed beside the interpreter running Snakemake: no venv
# activation needed, and SLURM jobs, which run this same interpreter on the nodes, find the same one.
if DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method:
    shell.prefix(f'export PATH={shlex.quote(sysconfig.get_path("scripts"))}:"$PATH"; ')


wildcard_constraints:
    dataset=r"[a-z][a-z0-9_]*",
    method=r"[a-z][a-z0-9_]*",
    seed=r"\d+",


def stage_params(stage):
    """The JSON the stage's command receives; as a rule param it also triggers reruns when it changes."""
    return stage_params_json(config, stage)


def run_files(pattern, datasets):
    """pattern (a train output) for every run of each dataset."""
    return [path for dataset in datasets for method, seed in RUNS
            for path in expand(pattern, dataset=dataset, method=method, seed=seed)]


def pretrained_models(wildcards):
    """model.pt of the runs a method builds on (its `pretrained` runs), same dataset and seed."""
    needs = method_class(wildcards.method).pretrained
    return expand(rules.train.output.model, dataset=wildcards.dataset, method=needs, seed=wildcards.seed)
