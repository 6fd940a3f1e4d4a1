"""Artefact I/O: atomic writes of open formats, checksums and provenance sidecars.

Every artefact is written to a temporary file in the destination folder and moved into place with
:func:`os.replace`, so an interrupted run never leaves a half-written file under the final name.

Formats: ``.npy`` for dense arrays (memory-mappable), Parquet for tables, JSON for provenance and
small results, CSV for the final table.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from leopart.errors import LeopartError

PathLike = str | os.PathLike


@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    The temporary file keeps the final suffix (``suffix`` overrides it) so that libraries which
    append extensions (numpy, pyarrow) behave. On any exception the temporary file is removed.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final.name}.", suffix=".tmp" + (suffix if suffix is not None else final.suffix),
        dir=final.parent,
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def save_npy(path: PathLike, array: np.ndarray) -> None:
    """Write ``array`` as ``.npy`` atomically."""
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, np.ascontiguousarray(array), allow_pickle=False)


@contextlib.contextmanager
def npy_writer(path: PathLike, shape: tuple[int, ...], dtype: Any) -> Iterator[np.memmap]:
    """Open a writable ``.npy`` memmap of ``shape``/``dtype`` that appears atomically at ``path``.

    Use for arrays produced in batches (feature dumps, label maps) so that the whole array never
    has to sit in memory::

        with npy_writer(out, (n, 28, 28, 384), np.float32) as arr:
            for i, batch in ...:
                arr[i : i + len(batch)] = batch
    """
    with atomic_path(path, suffix=".npy") as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        try:
            yield arr
            arr.flush()
        finally:
            del arr


def load_npy(
    path: PathLike,
    *,
    mmap: bool = True,
    ndim: int | None = None,
    dtype_kind: str | None = None,
    what: str = "array",
) -> np.ndarray:
    """Load a ``.npy`` file (memory-mapped by default) with clear one-line errors.

    Args:
        path: file to read.
        mmap: open read-only as a memmap instead of reading it into memory.
        ndim: if given, the required number of dimensions.
        dtype_kind: if given, allowed numpy dtype kinds, e.g. ``"iu"`` for integers, ``"f"``.
        what: a few words describing the content, used in error messages.
    """
    p = Path(path)
    if not p.is_file():
        raise LeopartError(f"{p}: {what} file is missing")
    try:
        arr = np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a corrupt file for the user
        raise LeopartError(f"{p}: cannot read {what} as .npy ({type(exc).__name__}: {exc})") from None
    if ndim is not None and arr.ndim != ndim:
        raise LeopartError(f"{p}: {what} must have {ndim} dimensions, found shape {arr.shape}")
    if dtype_kind is not None and arr.dtype.kind not in dtype_kind:
        raise LeopartError(f"{p}: {what} has dtype {arr.dtype}, expected kind {dtype_kind!r}")
    return arr


def write_json(path: PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON atomically (numpy scalars/arrays converted)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: PathLike, what: str = "JSON file") -> Any:
    """Read a JSON file with a one-line error for missing or corrupt files."""
    p = Path(path)
    if not p.is_file():
        raise LeopartError(f"{p}: {what} is missing")
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LeopartError(f"{p}: {what} is not valid JSON ({exc})") from None


def write_parquet(path: PathLike, table: Any) -> None:
    """Write a pandas DataFrame as Parquet atomically (no index column)."""
    with atomic_path(path, suffix=".parquet") as tmp:
        table.to_parquet(tmp, index=False)


def read_parquet(path: PathLike, what: str = "table") -> Any:
    """Read a Parquet table into pandas with a one-line error for missing or corrupt files."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise LeopartError(f"{p}: {what} file is missing")
    try:
        return pd.read_parquet(p)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a corrupt file for the user
        raise LeopartError(f"{p}: cannot read {what} as Parquet ({type(exc).__name__})") from None


def write_text(path: PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def sha256_file(path: PathLike, chunk_bytes: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_bytes), b""):
            h.update(chunk)
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour can change results (infomap and faiss included)."""
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for dist in ("leopart-pipeline", "numpy", "scipy", "torch", "torchvision", "timm", "faiss-cpu",
                 "faiss-gpu", "infomap", "pandas", "pyarrow", "pillow", "scikit-image", "snakemake"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def provenance(
    *,
    stage: str,
    params: Mapping[str, Any] | None = None,
    inputs: Mapping[str, PathLike] | None = None,
    extra: Mapping[str, Any] | None = None,
    checksum_limit_bytes: int = 256 << 20,
) -> dict[str, Any]:
    """Build a provenance record: stage, params, library versions and input checksums.

    Inputs larger than ``checksum_limit_bytes`` are recorded by size and mtime only (hashing
    multi-GB feature dumps would dominate the run time); all others get a SHA-256.
    """
    record: dict[str, Any] = {
        "stage": stage,
        "params": dict(params or {}),
        "versions": library_versions(),
        "argv": sys.argv,
        "inputs": {},
    }
    for name, p in (inputs or {}).items():
        path = Path(p)
        if not path.exists():
            continue
        info: dict[str, Any] = {"path": str(path), "bytes": path.stat().st_size if path.is_file() else None}
        if path.is_file() and path.stat().st_size <= checksum_limit_bytes:
            info["sha256"] = sha256_file(path)
        record["inputs"][name] = info
    if extra:
        record.update(extra)
    return record


def sidecar_path(path: PathLike) -> Path:
    """The provenance sidecar of an artefact: ``x.npy`` -> ``x.json``."""
    return Path(path).with_suffix(".json")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
