"""Snakemake script: leopart.stages.cd_stage.cd_label_free."""

from leopart.stages.cd_stage import cd_label_free
from leopart.stages.runner import run_stage

run_stage(cd_label_free, snakemake)
