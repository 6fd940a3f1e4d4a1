# leopart-pipeline: Table 5 of Leopart (CVPR 2022) from checkpoints to results/table5.csv.
#
#   snakemake --cores all results/table5.csv                          # toy default (CPU, offline)
#   snakemake --cores all --configfile config/pvoc.yaml results/table5.csv   # the paper's protocol

from snakemake.utils import min_version, validate

min_version("9.0")


# The default config applies unless --configfile is given (then that file alone is used, so the
# toy's keys never leak into another config).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/overcluster.smk"
include: "workflow/rules/cbfe.smk"
include: "workflow/rules/cd.smk"
include: "workflow/rules/table.smk"


rule all:
    default_target: True
    input:
        "results/table5.csv",
