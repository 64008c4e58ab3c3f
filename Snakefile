# avbias workflow: media -> manifest -> feature shards -> runs -> analysis -> report.
# Rules only wire files to `avbias` subcommands; the logic lives in the package (src/avbias).
# Configuration: params.yaml, overridden by any --configfile given after it (e.g. config/demo.yaml).

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "params.yaml"


validate(config, "workflow/schemas/params.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/acquire.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/analyse.smk"


rule all:
    input:
        report_outputs(),
    default_target: True


# One target per stage: each DVC stage runs `snakemake <stage>_all --allowed-rules <stage>`, so DVC and
# Snakemake run the same jobs and DVC's stage still gets Snakemake's parallelism.
rule acquire_all:
    input:
        stage_targets("acquire"),


rule manifest_all:
    input:
        stage_targets("manifest"),


rule extract_all:
    input:
        stage_targets("extract"),


rule train_all:
    input:
        stage_targets("train"),


rule analyse_all:
    input:
        stage_targets("analyse"),


# Light rules run on the submitting host under a cluster executor; so does acquire, which downloads
# (compute nodes often have no internet). Extraction and training are submitted with their resources.
localrules:
    all,
    acquire_all,
    manifest_all,
    extract_all,
    train_all,
    analyse_all,
    acquire,
    manifest,
    analyse,
    report,
