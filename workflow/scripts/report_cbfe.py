"""Snakemake script: leopart.stages.report.report_cbfe."""

from leopart.stages.report import report_cbfe
from leopart.stages.runner import run_stage

run_stage(report_cbfe, snakemake)
