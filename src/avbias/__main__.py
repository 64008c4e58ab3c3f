"""`python -m avbias`: the same CLI as the `avbias` script (which the Snakemake rules call)."""

import sys

from avbias.cli import main

sys.exit(main())
