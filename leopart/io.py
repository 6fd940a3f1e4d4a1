"""Artefact I/O: atomic writes of open formats, checksums and provenance sidecars.

Every artefact is written to a temporary file in the destination folder and moved into place with
:func:`os.replace`, so an interrupted run never leaves a half-written file under the final name.

Formats: ``.npy`` for dense arrays (memory-mappable), Parquet for tables, JSON for provenance and
small results, CSV for the final table.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import mmap
import os
import platform
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from leopart.errors import LeopartError

PathLike = str | os.PathLike


#: Temporary names beside a final artefact: ``.<final name>.pid<PID>.<random>.tmp<suffix>`` for
#: files, ``.<final name>.pid<PID>.<random>.tmp`` / ``.old`` for folders. The writer's PID lets the
#: next writer of the same artefact tell a temporary left by a killed process from a live one.
_TEMP_RE = r"^\.{name}\.pid(?P<pid>\d+)\.[^/]+\.(?:tmp|old)[^/]*$"


def _temp_prefix(final: Path) -> str:
    return f".{final.name}.pid{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(path: PathLike) -> list[Path]:
    """Delete the temporary files/folders of artefact ``path`` left by writers that are gone.

    A process killed while writing (``kill -9``, power loss) cannot clean up after itself; the next
    write of the same artefact calls this first, so stale temporaries never accumulate. Temporaries
    of a live process (another writer of the same name) are kept.

    Returns:
        The paths removed.
    """
    import re
    import shutil

    final = Path(path)
    if not final.parent.is_dir():
        return []
    pattern = re.compile(_TEMP_RE.format(name=re.escape(final.name)))
    removed = []
    for entry in final.parent.iterdir():
        m = pattern.match(entry.name)
        if m is None or _pid_alive(int(m.group("pid"))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    The temporary file keeps the final suffix (``suffix`` overrides it) so that libraries which
    append extensions (numpy, pyarrow) behave. On any exception the temporary file is removed;
    temporaries of the same artefact left by a killed earlier writer are removed first
    (:func:`remove_stale_temporaries`).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    fd, tmp_name = tempfile.mkstemp(
        prefix=_temp_prefix(final), suffix=".tmp" + (suffix if suffix is not None else final.suffix),
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


@contextlib.contextmanager
def atomic_dir(path: PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``path``; rename it onto ``path`` if the block succeeds.

    An existing ``path`` is replaced (moved aside, then deleted after the rename). On any exception
    the temporary folder is deleted and ``path`` is left untouched; temporaries of a killed earlier
    writer are removed first.
    """
    import shutil

    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(final), suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        old = None
        if final.exists() or final.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=_temp_prefix(final), suffix=".old", dir=final.parent))
            os.replace(final, old / "x")
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
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


def release_pages(arr: Any) -> None:
    """Drop the resident pages of a memory-mapped array from this process (the page cache keeps them).

    ``arr`` may be an ``np.memmap`` or any view onto one (slices, reshapes, ``as_strided``); the
    whole underlying mapping is released. Only for shared mappings (modes ``r``, ``r+``, ``w+``):
    on those, ``MADV_DONTNEED`` re-reads the up-to-date file contents on the next access.
    Copy-on-write (``c``) mappings are left alone since the advice would discard their private
    modifications. No-op for ordinary arrays. Reading a file chunk by chunk and releasing after
    each chunk keeps resident memory at the chunk size instead of growing to the file size.
    """
    seen = 0
    while arr is not None and seen < 64:
        mm = getattr(arr, "_mmap", None)
        if isinstance(mm, mmap.mmap):
            if getattr(arr, "mode", "c") == "c" or not hasattr(mmap, "MADV_DONTNEED"):
                return
            with contextlib.suppress(OSError, ValueError):
                mm.madvise(mmap.MADV_DONTNEED)
            return
        arr = getattr(arr, "base", None)
        seen += 1


def concat_npy(paths: list[PathLike], out_path: PathLike, what: str = "array",
               chunk_bytes: int = 64 << 20) -> tuple[int, ...]:
    """Concatenate ``.npy`` files along their first axis into ``out_path`` (gather of a scatter).

    Reads memory-mapped, copies ``chunk_bytes`` at a time and releases the pages after each chunk,
    so memory stays bounded; the output appears atomically and its bytes equal those of
    ``np.concatenate`` of the inputs.

    Raises:
        LeopartError naming the first file whose trailing shape or dtype differs from the first's.

    Returns:
        The output shape.
    """
    if not paths:
        raise LeopartError(f"{out_path}: no {what} files to concatenate")
    arrays = [load_npy(p, what=what) for p in paths]
    first = arrays[0]
    for p, a in zip(paths, arrays):
        if a.ndim == 0 or a.shape[1:] != first.shape[1:] or a.dtype != first.dtype:
            raise LeopartError(f"{p}: {what} shard has shape {a.shape} {a.dtype}, expected "
                               f"(n, {', '.join(map(str, first.shape[1:]))}) {first.dtype} like {paths[0]}")
    shape = (sum(a.shape[0] for a in arrays), *first.shape[1:])
    row_bytes = max(1, int(np.prod(first.shape[1:], dtype=np.int64)) * first.dtype.itemsize)
    step = max(1, int(chunk_bytes) // row_bytes)
    with npy_writer(out_path, shape, first.dtype) as out:
        at = 0
        for a in arrays:
            for start in range(0, a.shape[0], step):
                stop = min(a.shape[0], start + step)
                out[at + start:at + stop] = a[start:stop]
                release_pages(a)
                out.flush()
                release_pages(out)
            at += a.shape[0]
    return shape


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


@functools.cache
def code_version() -> dict[str, Any]:
    """The package version and, when the package runs from a git checkout, its commit.

    ``git_commit`` is ``None`` when this module is not a tracked file of a checkout (an installed
    package) or without git; ``git_dirty`` tells whether tracked files differ from that commit.
    """
    from importlib import metadata

    try:
        version: str | None = metadata.version("leopart-pipeline")
    except metadata.PackageNotFoundError:
        version = None
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True,
                                  timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    # an installed copy inside some other checkout (a venv in a project folder) is not that checkout's code
    tracked = git("ls-files", "--error-unmatch", "io.py") is not None
    commit = git("rev-parse", "HEAD") if tracked else None
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"package": version, "git_commit": commit, "git_dirty": bool(status) if commit else None}


def file_info(path: PathLike, checksum_limit_bytes: int = 256 << 20) -> dict[str, Any] | None:
    """``{path, bytes, sha256}`` of a file (no ``sha256`` above the limit: hashing multi-GB feature
    dumps would dominate the run time; ``bytes`` is None for a folder); None if it does not exist."""
    p = Path(path)
    if not p.exists():
        return None
    info: dict[str, Any] = {"path": str(p), "bytes": p.stat().st_size if p.is_file() else None}
    if p.is_file() and p.stat().st_size <= checksum_limit_bytes:
        info["sha256"] = sha256_file(p)
    return info


def _files_info(files: Mapping[str, Any], checksum_limit_bytes: int) -> dict[str, Any]:
    """:func:`file_info` of each named path (a list of paths gives a list); missing ones left out."""
    record: dict[str, Any] = {}
    for name, value in files.items():
        if isinstance(value, str | os.PathLike):
            info = file_info(value, checksum_limit_bytes)
        else:
            info = [i for i in (file_info(v, checksum_limit_bytes) for v in value) if i is not None]
        if info is not None:
            record[name] = info
    return record


_SMK_SCRIPT_COPY = re.compile(r"(?:^|.*/)\.snakemake/scripts/tmp[^/.]+\.([^/]+)$")


def stable_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with Snakemake's per-job script copy named by the workflow script it copies.

    Snakemake runs a ``script:`` from ``<workdir>/.snakemake/scripts/tmp<random>.<name>.py``; that
    name changes with every job, so it is recorded as ``workflow/scripts/<name>.py`` and the
    sidecar's bytes stay the same between identical runs.
    """
    return [_SMK_SCRIPT_COPY.sub(r"workflow/scripts/\1", str(a)) for a in argv]


def provenance(
    *,
    stage: str,
    params: Mapping[str, Any] | None = None,
    inputs: Mapping[str, Any] | None = None,
    outputs: Mapping[str, PathLike] | None = None,
    extra: Mapping[str, Any] | None = None,
    checksum_limit_bytes: int = 256 << 20,
) -> dict[str, Any]:
    """Build a provenance record: stage, params, code and library versions, and the path, size
    and (up to ``checksum_limit_bytes``) SHA-256 of every input and output file.

    An input may be a list of paths (recorded as a list). ``extra`` entries are added last.
    """
    record: dict[str, Any] = {
        "stage": stage,
        "params": dict(params or {}),
        "code_version": code_version(),
        "versions": library_versions(),
        "argv": stable_argv(sys.argv),
        "inputs": _files_info(inputs or {}, checksum_limit_bytes),
        "outputs": _files_info(outputs or {}, checksum_limit_bytes),
    }
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
