"""leopart-pipeline: a cached, auditable reproduction of Table 5 of Leopart (CVPR 2022).

The library holds all logic; the Snakemake rules in ``workflow/`` only call it.
"""

__version__ = "0.1.0"
