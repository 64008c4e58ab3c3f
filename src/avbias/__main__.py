"""`python -m avbias`: what the Snakemake rules call, with the interpreter that runs Snakemake."""

import sys

from avbias.cli import main

sys.exit(main())
