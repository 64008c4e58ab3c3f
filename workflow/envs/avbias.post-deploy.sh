#!/usr/bin/env bash
# Snakemake runs this once in the new conda environment, from the workflow's working directory (the
# project root): the locked wheels, then the project itself without re-resolving dependencies.
set -euo pipefail
if [ ! -f requirements.lock ] || [ ! -f pyproject.toml ]; then
    echo "avbias.post-deploy.sh: run Snakemake from the project root (requirements.lock, pyproject.toml)" >&2
    exit 1
fi
python -m pip install --quiet -r requirements.lock
python -m pip install --quiet --no-deps .
