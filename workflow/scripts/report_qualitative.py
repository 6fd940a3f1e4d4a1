"""Snakemake script: leopart.stages.report.report_qualitative."""

from leopart.stages.report import report_qualitative
from leopart.stages.runner import run_stage

run_stage(report_qualitative, snakemake)
