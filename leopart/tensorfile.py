"""Memory-mapped reading of single-tensor PyTorch ``.pt`` files without importing torch.

``torch.save(tensor, path)`` (the zip format of PyTorch ≥ 1.6) writes an uncompressed zip with a
pickle ``data.pkl`` that rebuilds the tensor from one storage ``data/0`` stored verbatim (little
endian). :func:`open_tensor` reads that pickle with an unpickler that knows only the three globals
such a file uses (``torch._utils._rebuild_tensor_v2``, ``torch.<Type>Storage``,
``collections.OrderedDict``) and returns a read-only ``np.memmap`` view of the storage with the
tensor's shape, strides and storage offset — nothing is read until it is indexed, and
:func:`leopart.io.release_pages` drops the pages that were read. This avoids importing torch
(seconds and ~0.8 GB of resident memory) in stages that only convert files.

Anything else (legacy non-zip files, compressed members, big-endian files, several storages,
containers holding tensors, other globals) raises :class:`UnsupportedTensorFile`; callers then
fall back to ``torch.load(weights_only=True, mmap=True)``. A file holding a plain container
without tensors (e.g. a dict of numbers) is returned as that Python object.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BFLOAT16", "TensorView", "UnsupportedTensorFile", "open_tensor"]

#: dtype marker of bfloat16 storages (numpy has no bfloat16; the view holds the raw uint16 bits).
BFLOAT16 = "bfloat16"

#: storage class name -> (numpy dtype or BFLOAT16, torch dtype name)
_STORAGES: dict[str, tuple[Any, str]] = {
    "FloatStorage": (np.float32, "torch.float32"),
    "DoubleStorage": (np.float64, "torch.float64"),
    "HalfStorage": (np.float16, "torch.float16"),
    "BFloat16Storage": (BFLOAT16, "torch.bfloat16"),
    "ByteStorage": (np.uint8, "torch.uint8"),
    "CharStorage": (np.int8, "torch.int8"),
    "ShortStorage": (np.int16, "torch.int16"),
    "IntStorage": (np.int32, "torch.int32"),
    "LongStorage": (np.int64, "torch.int64"),
    "BoolStorage": (np.bool_, "torch.bool"),
}


class UnsupportedTensorFile(Exception):
    """The file is not a plain single-tensor zip ``.pt`` that can be mapped without torch."""


@dataclass(frozen=True)
class TensorView:
    """A tensor of a ``.pt`` file as a lazy numpy view.

    Attributes:
        array: read-only view onto an ``np.memmap`` of the file, with the tensor's shape and
            strides; for bfloat16 tensors its dtype is ``uint16`` (the raw bits, see
            :func:`bfloat16_to_float32`).
        torch_dtype: the tensor's dtype as torch names it, e.g. ``"torch.float16"``.
        bfloat16: True when ``array`` holds bfloat16 bits.
    """

    array: np.ndarray
    torch_dtype: str
    bfloat16: bool = False


@dataclass(frozen=True)
class _StorageRef:
    np_dtype: Any
    torch_dtype: str
    key: str
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


class _StorageType:
    def __init__(self, name: str) -> None:
        self.name = name


def _rebuild_tensor_v2(storage: _StorageRef, offset: int, size: tuple, stride: tuple, *_: Any) -> _TensorRef:
    return _TensorRef(storage, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise UnsupportedTensorFile(f"global {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise UnsupportedTensorFile(f"persistent id {pid!r:.60}")
        np_dtype, torch_dtype = _STORAGES[pid[1].name]
        return _StorageRef(np_dtype, torch_dtype, str(pid[2]), int(pid[4]))


def _member_offset(fh: Any, info: zipfile.ZipInfo) -> int:
    """Byte offset of a stored member's data (after its local file header)."""
    fh.seek(info.header_offset)
    header = fh.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise UnsupportedTensorFile("bad local header")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len


def open_tensor(path: str | os.PathLike) -> TensorView | Any:
    """Map the single tensor of a zip ``.pt`` file (or return the tensor-free object it holds).

    Raises:
        UnsupportedTensorFile: the file needs ``torch.load`` (see the module docstring).
        OSError: the file cannot be opened.
    """
    p = Path(path)
    if not zipfile.is_zipfile(p):
        raise UnsupportedTensorFile("not a zip file")
    with zipfile.ZipFile(p) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        pkl = [n for n in infos if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise UnsupportedTensorFile("no single data.pkl")
        prefix = pkl[0][: -len("data.pkl")]
        order = infos.get(prefix + "byteorder")
        if order is not None and zf.read(order).strip() != b"little":
            raise UnsupportedTensorFile("big-endian storages")
        try:
            obj = _Unpickler(io.BytesIO(zf.read(pkl[0]))).load()
        except UnsupportedTensorFile:
            raise
        except Exception as exc:  # noqa: BLE001 - let torch.load produce its own diagnosis
            raise UnsupportedTensorFile(f"pickle: {type(exc).__name__}") from None
        if not isinstance(obj, _TensorRef):
            if _holds_tensor(obj):
                raise UnsupportedTensorFile("container of tensors")
            return obj
        ref = obj
        info = infos.get(f"{prefix}data/{ref.storage.key}")
        if info is None or info.compress_type != zipfile.ZIP_STORED:
            raise UnsupportedTensorFile("storage missing or compressed")
        bf16 = ref.storage.np_dtype is BFLOAT16
        dtype = np.dtype(np.uint16 if bf16 else ref.storage.np_dtype)
        if info.file_size != ref.storage.numel * dtype.itemsize:
            raise UnsupportedTensorFile("storage size mismatch")
        with open(p, "rb") as fh:
            offset = _member_offset(fh, info)
    if ref.storage.numel == 0:
        flat = np.zeros(0, dtype=dtype)
    else:
        flat = np.memmap(p, dtype=dtype, mode="r", offset=offset, shape=(ref.storage.numel,))
    span = 1 + sum((s - 1) * st for s, st in zip(ref.size, ref.stride)) if all(ref.size) else 0
    if ref.offset < 0 or any(st < 0 for st in ref.stride) or ref.offset + span > ref.storage.numel:
        raise UnsupportedTensorFile("tensor outside its storage")
    view = np.lib.stride_tricks.as_strided(
        flat[ref.offset:], shape=ref.size, strides=tuple(st * dtype.itemsize for st in ref.stride),
        writeable=False,
    )
    return TensorView(array=view, torch_dtype=ref.storage.torch_dtype, bfloat16=bf16)


def _holds_tensor(obj: Any) -> bool:
    if isinstance(obj, _TensorRef):
        return True
    if isinstance(obj, dict):
        return any(_holds_tensor(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_holds_tensor(v) for v in obj)
    return False


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """Exact float32 values of bfloat16 numbers given as their ``uint16`` bit patterns."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
