"""Snakemake script: leopart.stages.cd_stage.cd_search."""

from leopart.stages.cd_stage import cd_search
from leopart.stages.runner import run_stage

run_stage(cd_search, snakemake)
