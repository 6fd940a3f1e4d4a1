"""Snakemake script: leopart.stages.report.report_cd."""

from leopart.stages.report import report_cd
from leopart.stages.runner import run_stage

run_stage(report_cd, snakemake)
