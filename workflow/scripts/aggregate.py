# Thin wrapper: Snakemake hands over the plan (no command-line size limit) and paths.
import logging
from pathlib import Path

from cifarlab.aggregate import aggregate

with open(snakemake.log[0], "w") as log:  # noqa: F821 (snakemake is injected)
    logging.basicConfig(level=logging.INFO, stream=log)
    try:
        aggregate(
            snakemake.params.plan,  # noqa: F821
            Path(snakemake.params.runs),  # noqa: F821
            Path(snakemake.params.out),  # noqa: F821
            profile=snakemake.params.profile,  # noqa: F821
            experiments=snakemake.params.experiments,  # noqa: F821
        )
    except Exception as exc:
        print(f"error: {exc}", file=log)
        raise
