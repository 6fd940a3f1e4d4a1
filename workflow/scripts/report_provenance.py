"""Snakemake script: leopart.stages.report.report_provenance."""

from leopart.stages.report import report_provenance
from leopart.stages.runner import run_stage

run_stage(report_provenance, snakemake)
