"""Snakemake script: leopart.stages.table_stage.table5."""

from leopart.stages.runner import run_stage
from leopart.stages.table_stage import table5

run_stage(table5, snakemake)
