"""Snakemake script: leopart.stages.report.segmentations."""

from leopart.stages.report import segmentations
from leopart.stages.runner import run_stage

run_stage(segmentations, snakemake)
