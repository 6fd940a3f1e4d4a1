"""Stage: Table 5 and its paired comparisons from the row metric artefacts."""

from __future__ import annotations

import logging

from leopart.io import write_text
from leopart.stages.runner import Sidecars, StageCall
from leopart.table import build_table, table_comparisons, table_rows

log = logging.getLogger(__name__)


def table5(call: StageCall) -> Sidecars:
    """Write Table 5 (CSV) and ``comparisons.csv``; the table's sidecar holds every row's values,
    the decomposition of its spread and the paired comparisons (see :mod:`leopart.table`).

    ``params``: ``labels``, ``dataset``, ``voc2012``, ``derived``, ``k_overcluster``, ``k_fg``,
    ``k_cd``, ``seeds`` (the seeds
    of every input file), ``cd_rows`` / ``cbfe_rows`` ([row name, input name] of every +CD / +CBFE
    variant) and ``has_labels`` (false without masks: every row's note says it needs labels).
    """
    p = call.params
    cd_rows = [tuple(r) for r in p["cd_rows"]]
    cbfe_rows = [tuple(r) for r in p.get("cbfe_rows", [("+ CBFE", "cbfe")])]
    has_labels = bool(p.get("has_labels", True))
    result = build_table(
        dict(call.input), dict(p["seeds"]), dict(p["labels"]), p["dataset"],
        table_rows(p["k_overcluster"], p["k_fg"], p["k_cd"], cd_rows, cbfe_rows),
        table_comparisons([name for name, _ in cd_rows], [name for name, _ in cbfe_rows]),
        voc2012=bool(p.get("voc2012", False)), has_labels=has_labels,
    )
    if not has_labels:
        log.warning("the dataset has no masks: every row needs labels for a number (segmentations only)")
    elif (result.table["classes"] == 0).any():
        log.warning("val ground truth has no valid pixel: mIoU is NaN (%s)", ", ".join(result.table["row"]))
    write_text(call.output["table"], result.table.to_csv(index=False, float_format="%.2f"))
    write_text(call.output["comparisons"], result.comparisons.to_csv(index=False, float_format="%.3f"))
    log.info("Table 5:\n%s", result.table.to_string(index=False))
    log.info("Paired comparisons:\n%s", result.comparisons.to_string(index=False))
    return {"table": {**result.record, "sources": dict(call.input),
                      "derived_from_num_classes": dict(p.get("derived") or {})},
            "comparisons": {"table": call.output["table"]}}
