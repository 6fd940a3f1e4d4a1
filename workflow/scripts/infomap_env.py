"""Snakemake script: leopart.stages.cd_stage.infomap_env."""

from leopart.stages.cd_stage import infomap_env
from leopart.stages.runner import run_stage

run_stage(infomap_env, snakemake)
