"""Snakemake script: leopart.stages.cd_stage.cd_score."""

from leopart.stages.cd_stage import cd_score
from leopart.stages.runner import run_stage

run_stage(cd_score, snakemake)
