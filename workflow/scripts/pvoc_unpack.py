"""Snakemake script: leopart.stages.data.pvoc_unpack."""

from leopart.stages.data import pvoc_unpack
from leopart.stages.runner import run_stage

run_stage(pvoc_unpack, snakemake)
