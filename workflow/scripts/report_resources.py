"""Snakemake script: leopart.stages.report.report_resources."""

from leopart.stages.report import report_resources
from leopart.stages.runner import run_stage

run_stage(report_resources, snakemake)
