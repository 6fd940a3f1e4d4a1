"""Stage: Table 5 from the row metric artefacts."""

from __future__ import annotations

import logging
from typing import Any

from leopart.io import provenance, sidecar_path, write_json, write_text
from leopart.stages.runner import params_of
from leopart.table import build_table

log = logging.getLogger(__name__)


def table5(smk: Any) -> None:
    """Write Table 5 (CSV) and its provenance sidecar."""
    inputs = {name: (paths if isinstance(paths, str) else list(paths)) for name, paths in smk.input.items()}
    table = build_table(inputs, dict(smk.params.labels), smk.params.dataset, smk.params.k_overcluster,
                        smk.params.k_fg, smk.params.k_cd)
    write_text(smk.output.table, table.to_csv(index=False, float_format="%.2f"))
    write_json(sidecar_path(smk.output.table), provenance(stage="table5", params=params_of(smk),
                                                          extra={"sources": inputs}))
    log.info("Table 5:\n%s", table.to_string(index=False))
