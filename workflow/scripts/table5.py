"""Snakemake script: leopart.stages.table_stage.table5."""

from leopart.stages.table_stage import table5
from leopart.stages.runner import run_stage

run_stage(table5, snakemake)  # noqa: F821 - injected by Snakemake
