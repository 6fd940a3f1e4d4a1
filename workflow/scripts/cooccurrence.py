"""Snakemake script: leopart.stages.cd_stage.cooccurrence."""

from leopart.stages.cd_stage import cooccurrence
from leopart.stages.runner import run_stage

run_stage(cooccurrence, snakemake)
