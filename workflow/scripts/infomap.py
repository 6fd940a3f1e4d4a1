"""Snakemake script: leopart.stages.cd_stage.infomap."""

from leopart.stages.cd_stage import infomap
from leopart.stages.runner import run_stage

run_stage(infomap, snakemake)
