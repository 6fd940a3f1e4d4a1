"""Snakemake script: leopart.stages.report.report_table."""

from leopart.stages.report import report_table
from leopart.stages.runner import run_stage

run_stage(report_table, snakemake)
