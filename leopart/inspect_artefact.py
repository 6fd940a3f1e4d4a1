"""Describe an artefact without loading it whole: arrays, tables, JSON, and its provenance.

``.npy`` files are opened with ``mmap_mode="r"`` and summarised in chunks of about
``chunk_bytes`` (16 MB by default) along the first axis, so a multi-GB feature dump costs one
pass over the file and constant memory. Integer and boolean arrays are label maps or masks: their
distinct values are counted (up to :data:`MAX_DISTINCT`) and the most frequent ones listed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from leopart.errors import LeopartError
from leopart.io import sidecar_path

#: Integer arrays with more distinct values than this are not counted further.
MAX_DISTINCT: int = 1 << 16


@dataclass
class ArraySummary:
    """Streaming summary of a numeric array.

    Attributes:
        shape, dtype: as stored.
        count: number of elements.
        min, max, mean: over finite values (float arrays) or all values; None when empty.
        nonfinite: NaN/inf count (float arrays only).
        values, counts: distinct values and their counts, most frequent first (integer/bool
            arrays only; None when there are more than :data:`MAX_DISTINCT` or for floats).
        distinct: number of distinct values, or None when not counted.
    """

    shape: tuple[int, ...]
    dtype: str
    count: int = 0
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    nonfinite: int = 0
    distinct: int | None = None
    values: list[int] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)


def _flat_chunks(arr: np.ndarray, chunk_bytes: int):
    """Yield 1-D arrays of consecutive pieces of ``arr`` of about ``chunk_bytes`` each.

    A file-backed memmap is read through a fresh small mapping per piece, released before the
    next, so the pages already summarised do not accumulate in the process's memory.
    """
    if arr.ndim == 0:
        yield np.asarray(arr).reshape(1)
        return
    step = max(1, chunk_bytes // max(1, arr.dtype.itemsize))
    if isinstance(arr, np.memmap) and arr.filename is not None and (arr.flags.c_contiguous or arr.flags.f_contiguous):
        for start in range(0, arr.size, step):
            piece = np.memmap(arr.filename, dtype=arr.dtype, mode="r",
                              offset=arr.offset + start * arr.dtype.itemsize,
                              shape=(min(step, arr.size - start),))
            try:
                yield np.asarray(piece)
            finally:
                del piece
        return
    flat = arr.T if (not arr.flags.c_contiguous and arr.flags.f_contiguous) else arr
    flat = flat.reshape(-1)
    for start in range(0, flat.shape[0], step):
        yield np.asarray(flat[start:start + step])


def summarise_array(arr: np.ndarray, *, chunk_bytes: int = 16 << 20) -> ArraySummary:
    """Min/max/mean (and value counts for integer arrays) in one chunked pass over ``arr``."""
    s = ArraySummary(shape=tuple(int(d) for d in arr.shape), dtype=str(arr.dtype))
    kind = arr.dtype.kind
    if kind not in "biuf":
        return s
    total = 0.0
    lo: Any = None
    hi: Any = None
    n_used = 0
    values = np.empty(0, dtype=np.int64)
    counts = np.empty(0, dtype=np.int64)
    counting = kind in "biu"
    for chunk in _flat_chunks(arr, chunk_bytes):
        s.count += chunk.size
        if kind == "f":
            finite = np.isfinite(chunk)
            s.nonfinite += int(chunk.size - finite.sum())
            chunk = chunk[finite] if not finite.all() else chunk
        if chunk.size == 0:
            continue
        c_lo, c_hi = chunk.min(), chunk.max()
        lo = c_lo if lo is None else min(lo, c_lo)
        hi = c_hi if hi is None else max(hi, c_hi)
        total += float(chunk.sum(dtype=np.float64))
        n_used += chunk.size
        if counting:
            v, c = np.unique(chunk, return_counts=True)
            values = np.concatenate([values, v.astype(np.int64)])
            counts = np.concatenate([counts, c.astype(np.int64)])
            values, inv = np.unique(values, return_inverse=True)
            counts = np.bincount(inv, weights=counts, minlength=values.size).astype(np.int64)
            if values.size > MAX_DISTINCT:
                counting = False
    if n_used:
        s.min, s.max, s.mean = float(lo), float(hi), total / n_used
    if counting:
        order = np.argsort(-counts, kind="stable")
        s.distinct = int(values.size)
        s.values = values[order].tolist()
        s.counts = counts[order].tolist()
    return s


def _fmt_num(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.6g}"


def format_array_summary(s: ArraySummary, *, top: int = 10) -> list[str]:
    """Readable lines for :class:`ArraySummary`."""
    lines = [f"shape {s.shape}  dtype {s.dtype}  elements {s.count}"]
    if s.min is not None or s.count == 0:
        lines.append(f"min {_fmt_num(s.min)}  max {_fmt_num(s.max)}  mean {_fmt_num(s.mean)}"
                     + (f"  non-finite {s.nonfinite}" if s.nonfinite else ""))
    if s.distinct is not None:
        shown = ", ".join(f"{v}: {c} ({100 * c / max(1, s.count):.1f}%)"
                          for v, c in zip(s.values[:top], s.counts[:top]))
        more = f", … {s.distinct - top} more" if s.distinct > top else ""
        lines.append(f"distinct values {s.distinct}; most frequent: {shown}{more}")
    elif s.dtype[0] in "iu" or s.dtype.startswith(("int", "uint")):
        lines.append(f"more than {MAX_DISTINCT} distinct values (not counted)")
    return lines


def _open_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a bad file for the user
        raise LeopartError(f"{path}: cannot read as .npy ({type(exc).__name__}: {exc})") from None


def _describe_npy(path: Path, chunk_bytes: int) -> list[str]:
    arr = _open_npy(path)
    return format_array_summary(summarise_array(arr, chunk_bytes=chunk_bytes))


def _describe_npz(path: Path, chunk_bytes: int) -> list[str]:
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001
        raise LeopartError(f"{path}: cannot read as .npz ({type(exc).__name__}: {exc})") from None
    lines = []
    with archive:
        for name in archive.files:
            try:
                arr = archive[name]
            except Exception as exc:  # noqa: BLE001
                raise LeopartError(f"{path}: member {name} unreadable ({type(exc).__name__})") from None
            lines.append(f"[{name}]")
            lines.extend("  " + x for x in format_array_summary(summarise_array(arr, chunk_bytes=chunk_bytes)))
    return lines


def _describe_parquet(path: Path, rows: int) -> list[str]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        head = next(pf.iter_batches(batch_size=max(1, rows)), None)
    except Exception as exc:  # noqa: BLE001
        raise LeopartError(f"{path}: cannot read as Parquet ({type(exc).__name__}: {exc})") from None
    lines = [f"rows {pf.metadata.num_rows}  columns {pf.metadata.num_columns}  "
             f"row groups {pf.metadata.num_row_groups}", "schema:"]
    lines.extend(f"  {f.name}: {f.type}" for f in pf.schema_arrow)
    if head is not None and rows > 0:
        import pandas as pd

        with pd.option_context("display.width", 160, "display.max_columns", 20,
                               "display.max_colwidth", 60):
            lines.append(f"head ({min(rows, head.num_rows)} rows):")
            lines.extend("  " + x for x in head.to_pandas().head(rows).to_string().splitlines())
    return lines


def _short_json(obj: Any, max_items: int = 12, depth: int = 0) -> Any:
    """``obj`` with long lists shortened (first items + a count) for display."""
    if isinstance(obj, dict):
        return {k: _short_json(v, max_items, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        if len(obj) > max_items:
            return [_short_json(v, max_items, depth + 1) for v in obj[:max_items]] + [f"… {len(obj) - max_items} more"]
        return [_short_json(v, max_items, depth + 1) for v in obj]
    return obj


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LeopartError(f"{path}: not valid JSON ({exc})") from None


def _compact(obj: dict[str, Any], width: int = 160) -> list[str]:
    """One line per key: ``key: <compact JSON>``, cut at ``width`` characters."""
    lines = []
    for k, v in obj.items():
        text = json.dumps(_short_json(v, max_items=8), default=str, separators=(", ", ": "), ensure_ascii=False)
        lines.append(f"{k}: {text if len(text) <= width else text[:width - 1] + '…'}")
    return lines


PROVENANCE_KEYS = ("stage", "params", "inputs", "outputs", "versions", "argv", "code_version")


def _describe_json(path: Path) -> list[str]:
    data = _read_json(path)
    if not isinstance(data, dict):
        return json.dumps(_short_json(data), default=str)[:2000].splitlines()
    content = {k: v for k, v in data.items() if k not in PROVENANCE_KEYS}
    lines = _compact(content)
    if any(k in data for k in ("stage", "inputs", "outputs")):
        lines.append("provenance (embedded):")
        lines += ["  " + x for x in format_provenance(data, content=False)]
    return lines


def _describe_text(path: Path, rows: int) -> list[str]:
    with open(path, "rb") as fh:
        head = [fh.readline() for _ in range(rows + 1)]
    try:
        return [b.decode().rstrip("\n") for b in head if b]
    except UnicodeDecodeError:
        raise LeopartError(f"{path}: not a text file") from None


def format_provenance(record: Any, *, content: bool = True) -> list[str]:
    """Readable lines for a provenance record: stage, code version, params, inputs, outputs,
    library versions, and (``content``) its other keys."""
    from leopart.audit import format_code_version

    if not isinstance(record, dict):
        return [json.dumps(record)[:200]]
    lines = []
    if "stage" in record:
        lines.append(f"stage {record['stage']}  code {format_code_version(record) or '-'}")
    if record.get("params"):
        lines.append("params " + json.dumps(_short_json(record["params"]), sort_keys=True, default=str))
    for section in ("inputs", "outputs"):
        entries = record.get(section)
        if isinstance(entries, dict) and entries:
            lines.append(f"{section}:")
            for name, info in entries.items():
                if isinstance(info, dict):
                    sha = (info.get("sha256") or "-")[:16]
                    lines.append(f"  {name}: {info.get('path')}  {info.get('bytes')} bytes  sha256 {sha}")
    rest = {k: v for k, v in record.items() if k not in PROVENANCE_KEYS}
    if rest and content:
        lines.extend(_compact(rest))
    if isinstance(record.get("versions"), dict):
        lines.append("versions " + ", ".join(f"{k} {v}" for k, v in sorted(record["versions"].items())))
    return lines


def describe(path: str | os.PathLike, *, rows: int = 5, chunk_bytes: int = 16 << 20) -> str:
    """A multi-line description of the artefact at ``path`` and of its provenance sidecar.

    Supports ``.npy`` (streamed summary), ``.npz``, Parquet (schema, rows, head), JSON (shortened
    content) and text (first lines). Bad input raises :class:`LeopartError` naming the file.
    """
    p = Path(path)
    if not p.exists():
        raise LeopartError(f"{p}: file is missing")
    if p.is_dir():
        raise LeopartError(f"{p}: is a folder; give one artefact file (audit checks whole runs)")
    suffix = p.suffix.lower()
    lines = [f"{p}  ({p.stat().st_size} bytes)"]
    if suffix == ".npy":
        lines += _describe_npy(p, chunk_bytes)
    elif suffix == ".npz":
        lines += _describe_npz(p, chunk_bytes)
    elif suffix == ".parquet":
        lines += _describe_parquet(p, rows)
    elif suffix == ".json":
        lines += _describe_json(p)
    elif suffix in (".csv", ".tsv", ".txt", ".log", ".yaml", ".yml"):
        lines += _describe_text(p, rows)
    else:
        raise LeopartError(f"{p}: unsupported artefact type {suffix or '(no suffix)'} "
                           "(.npy, .npz, .parquet, .json, .csv)")
    side = sidecar_path(p)
    if side != p:
        if side.is_file():
            lines.append(f"provenance ({side}):")
            lines += ["  " + x for x in format_provenance(_read_json(side))]
        else:
            lines.append(f"provenance: no sidecar ({side} does not exist)")
    return "\n".join(lines)
