"""Snakemake script: leopart.stages.cbfe_stage.cbfe."""

from leopart.stages.cbfe_stage import cbfe
from leopart.stages.runner import run_stage

run_stage(cbfe, snakemake)
