"""Snakemake script: leopart.stages.data.pvoc_download."""

from leopart.stages.data import pvoc_download
from leopart.stages.runner import run_stage

run_stage(pvoc_download, snakemake)
