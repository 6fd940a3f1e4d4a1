"""Snakemake script: leopart.stages.cd_stage.cd_edges."""

from leopart.stages.cd_stage import cd_edges
from leopart.stages.runner import run_stage

run_stage(cd_edges, snakemake)
