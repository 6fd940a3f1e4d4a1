# leopart-pipeline: Table 5 of Leopart (CVPR 2022) from checkpoints to results/table5.csv.
#
#   snakemake results/table5.csv --cores all                          # toy default (CPU, offline)
#   snakemake results/table5.csv --cores all --configfile config/pvoc.yaml   # the paper's protocol
# (the target goes first: --configfile takes every argument that follows it)

from snakemake.utils import min_version

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
include: "workflow/rules/label_free.smk"
include: "workflow/rules/table.smk"
include: "workflow/rules/report.smk"


report: "workflow/report/workflow.rst"


rule all:
    default_target: True
    input:
        "results/table5.csv",
