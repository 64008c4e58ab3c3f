# avbias workflow: media -> manifest -> feature shards -> runs -> analysis -> report.
# Rules only wire files to `avbias` subcommands; the logic lives in the package (src/avbias).
# One rule file per stage (workflow/rules/<stage>.smk), each with its `<stage>_all` target for DVC.
# Configuration: params.yaml, overridden by any --configfile given after it (e.g. config/demo.yaml).

import sys

from snakemake.utils import min_version

from avbias.config import validate_params
from avbias.acquire.plan import acquisition_note
from avbias.models.weights import check_pretrained

min_version("9.0")


configfile: "params.yaml"


# The schema (src/avbias/schemas/params.schema.yaml) and the relations it cannot express; each error names
# its key (train.epochs, not just "-3 is less than the minimum of 1").
validate_params(config, source="config")
# External encoder weights (model.pretrained): present and verified before any job runs.
check_pretrained(config)
# Before a long download, say what it is, where it goes and how to use local copies instead.
if note := acquisition_note(config):
    print(note, file=sys.stderr)


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/acquire.smk"
include: "workflow/rules/manifest.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/analyse.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        rules.report.output,
    default_target: True


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
