# cifarlab: the CIFAR-10 MLP/CNN study, from download to report.
#   snakemake --cores 2 --configfile config/quick.yaml      the study scaled to a laptop CPU
#   snakemake --profile profiles/gpu                        the study on one GPU
#   snakemake --profile profiles/slurm                      the study on a SLURM cluster
from snakemake.utils import min_version, validate

min_version("9.0")


# Paths from the Snakefile's folder, so `--directory elsewhere` works too.
configfile: f"{workflow.basedir}/config/config.yaml"


# Plan with this checkout's code (src/), not another installed copy: the jobs run it too.
import sys

sys.path.insert(0, f"{workflow.basedir}/src")
from cifarlab.study import normalize_config

normalize_config(config)
validate(config, schema=f"{workflow.basedir}/workflow/schemas/config.schema.yaml")


# `snakemake --report`: the workflow's description (figures and tables carry their own).
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        rules.aggregate.output,
        rules.figures.output,
        rules.report.output,
