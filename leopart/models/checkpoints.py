"""Reading checkpoints and loading backbone weights into a ViT (spec §2.3, §11.8).

Three checkpoint sources are understood (:func:`extract_backbone_state`):

- ``"dino"`` — DINO's *full* training checkpoint (``{"teacher": {"backbone.<k>": …,
  "head.<k>": …}, "student": …, "args": Namespace, …}``; the teacher backbone is used, as the
  authors do), DINO's backbone-only release (a plain state dict), or a timm-style state dict.
- ``"leopart"`` — a Leopart (PyTorch Lightning) checkpoint: ``ckpt["state_dict"]`` if present,
  the student's ``model.*`` keys if any (``teacher.*`` ignored), prefix stripped, projection-head
  and prototype keys dropped.
- ``"local"`` — any other file holding a ViT state dict (see :func:`extract_backbone_state`),
  timm's key names or the official DINOv2 release's (converted as timm does).

Unlike the original code, which loads with ``strict=False`` and silently keeps a random ViT when
the key prefix does not match (§11.8), :func:`load_backbone_weights` refuses a checkpoint that
leaves any backbone parameter unset or brings unknown non-head keys.

Files are read with ``torch.load(weights_only=True)``, whose allow-list (tensors, plain
containers) is extended by ``argparse.Namespace``, which DINO's full checkpoint stores under
``"args"`` — so DINO checkpoints load without ``trust``. A file whose pickle references any other
global (a class such as PyTorch Lightning's callback types, or a function such as ``os.system``)
would execute code from the file when fully unpickled; it is refused with one message naming
``models.<name>.weights.trust`` unless the caller sets ``trust=True`` (the referenced globals are
found by parsing the pickle's opcodes, nothing is executed). Trusted files are unpickled with a
tolerant unpickler that replaces classes from modules that are not installed (e.g.
``pytorch_lightning``) by inert stand-ins, so the weights can still be read.
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import types
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from leopart.errors import LeopartError

PathLike = str | os.PathLike

__all__ = ["SOURCES", "load_checkpoint_file", "extract_backbone_state", "load_backbone_weights"]

#: Accepted values of ``source``.
SOURCES = ("dino", "leopart", "local", "random")

#: Globals allowed in addition to torch's weights-only defaults (DINO's full checkpoint has args).
_SAFE_GLOBALS = [argparse.Namespace]

#: Entries tried, in this order, for ``source="local"`` when the file is not itself a state dict.
LOCAL_ENTRIES = ("state_dict", "model", "teacher")


def load_checkpoint_file(path: PathLike, trust: bool = False) -> dict[str, Any]:
    """Read a checkpoint file into a dict on the CPU.

    Args:
        path: ``.pth``/``.ckpt``/``.pt`` file written by ``torch.save``.
        trust: allow full unpickling (arbitrary code execution!) when the file references
            globals beyond tensors, plain containers and ``argparse.Namespace``. Set only for
            files you trust.

    Raises:
        LeopartError: missing file; file needs full unpickling and ``trust`` is False; corrupt or
            not a checkpoint; content is not a dict.
    """
    p = Path(path)
    if not p.is_file():
        raise LeopartError(f"{p}: checkpoint file is missing")
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - zip/EOF/key/unpickling errors are sorted out below
        # torch's restricted unpickler refuses a well-formed pickle that references anything
        # beyond the allow-list with the same exception type as a corrupt file: tell them apart
        # by parsing the pickle opcodes (nothing is executed).
        names = _pickle_globals(p)
        if names is None:
            raise _corrupt(p, exc) from None
        if not trust:
            refs = [n for n in names if n not in _allowed_global_names()]
            hint = f" (it references {', '.join(refs[:3])})" if refs else ""
            raise LeopartError(
                f"{p}: checkpoint needs full unpickling, which would execute code from the file"
                f"{hint}; set models.<name>.weights.trust: true only if you trust the file"
            ) from None
        try:
            obj = torch.load(p, map_location="cpu", weights_only=False, pickle_module=_tolerant_pickle)
        except Exception as exc2:  # noqa: BLE001 - anything failing here is a broken file
            raise _corrupt(p, exc2) from None
    if not isinstance(obj, Mapping):
        raise LeopartError(f"{p}: checkpoint holds a {type(obj).__name__}, expected a dict")
    return dict(obj)


def extract_backbone_state(ckpt: Mapping[str, Any], source: str) -> dict[str, torch.Tensor]:
    """Select the ViT backbone's parameters from a loaded checkpoint; keys as in timm/DINO.

    Rules per ``source``:

    - ``"dino"``: if the dict has ``"teacher"``, use it (full DINO checkpoint); otherwise the dict
      itself (DINO backbone-only release, timm-style dict). Keys are taken under the prefix of
      the key ending in ``cls_token`` (``backbone.`` in the full checkpoint, ``module.backbone.``
      for DDP-wrapped ones, none for plain dicts), the prefix is stripped and keys containing
      ``head`` are dropped.
    - ``"leopart"``: use ``ckpt["state_dict"]`` if present, else the dict itself; keep keys
      starting with ``model.`` (the student) if there are any, else all keys; strip the prefix
      found as everything before the key ending in ``cls_token``; drop keys containing ``head``
      or ``prototypes``.
    - ``"local"``: if the dict itself contains a key ending in ``cls_token`` it is the state dict;
      otherwise the first of the entries ``"state_dict"``, ``"model"``, ``"teacher"`` that is a
      dict containing such a key. Then as for ``"leopart"`` minus the ``model.`` preference: the
      prefix of the first key ending in ``cls_token`` (dict order) is stripped, keys containing
      ``head`` or ``prototypes`` are dropped.

    Non-tensor values are ignored. Raises :class:`LeopartError` (without a file name; callers add
    it) when no backbone is found.
    """
    state, _ = _extract(ckpt, source)
    return state


def load_backbone_weights(
    model: nn.Module,
    path: PathLike | None,
    source: str,
    trust: bool = False,
) -> dict[str, Any]:
    """Load a checkpoint's backbone weights into ``model`` and verify nothing was left unset.

    Args:
        model: a ViT from :func:`leopart.models.vit.build_vit` (modified in place).
        path: checkpoint file (ignored, may be None, for ``source="random"``).
        source: ``"dino"``, ``"leopart"``, ``"local"`` (see :func:`extract_backbone_state`) or
            ``"random"`` (keep the random initialisation; nothing is read).
        trust: see :func:`load_checkpoint_file`.

    A positional embedding stored for a different (square) grid is resampled to the model's
    native grid with DINO's rule (:func:`~leopart.models.vit.interpolate_pos_embed_dino`); its
    prefix entries follow the model's layout (one for CLS, none for timm's ``no_embed_class``
    models such as DINOv2 with registers).

    Returns:
        A report: ``{"source", "path", "loaded" (number of tensors loaded), "ignored" (checkpoint
        keys not used: other networks, heads, prototypes), "pos_embed_resampled" (``[old_n,
        new_n]`` patch entries or None)}``.

    Raises:
        LeopartError naming the file and the first keys when a backbone parameter is missing
        from the checkpoint, the checkpoint has unknown non-head keys, or shapes differ.
    """
    if source not in SOURCES:
        raise LeopartError(f"source {source!r}: expected one of {', '.join(SOURCES)}")
    if source == "random":
        return {"source": source, "path": None, "loaded": 0, "ignored": [], "pos_embed_resampled": None}
    if path is None:
        raise LeopartError(f"source {source!r}: a checkpoint path is required")
    p = Path(path)
    ckpt = load_checkpoint_file(p, trust=trust)
    try:
        state, ignored = _extract(ckpt, source)
    except LeopartError as exc:
        raise LeopartError(f"{p}: {exc}") from None

    if "mask_token" in state or "register_tokens" in state:
        state, dropped = _from_dinov2_release(state, model)
        ignored = ignored + dropped
    resampled = None
    own = model.state_dict()
    pe = state.get("pos_embed")
    if pe is not None and "pos_embed" in own and pe.shape != own["pos_embed"].shape:
        if pe.ndim == 3 and pe.shape[0] == 1 and pe.shape[-1] == own["pos_embed"].shape[-1]:
            from leopart.models.vit import interpolate_pos_embed_dino, pos_embed_prefix

            gh, gw = model.patch_embed.grid_size
            prefix = pos_embed_prefix(model)
            try:
                state["pos_embed"] = interpolate_pos_embed_dino(pe.float(), int(gh), int(gw),
                                                                num_prefix=prefix).to(pe.dtype)
            except LeopartError as exc:
                raise LeopartError(f"{p}: {exc}") from None
            resampled = [int(pe.shape[1]) - prefix, int(gh) * int(gw)]

    bad_shapes = [
        f"{k} {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if bad_shapes:
        raise LeopartError(
            f"{p}: {source} checkpoint does not fit the model (shape mismatch: {_first(bad_shapes)})"
        )
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not _is_head_key(k)]
    unexpected = [k for k in result.unexpected_keys if not _is_head_key(k)]
    if missing:
        raise LeopartError(
            f"{p}: {source} checkpoint leaves {len(missing)} model parameters unset "
            f"(missing: {_first(missing)}); wrong source or architecture?"
        )
    if unexpected:
        raise LeopartError(
            f"{p}: {source} checkpoint has {len(unexpected)} keys the model does not know "
            f"(unexpected: {_first(unexpected)}); wrong source or architecture?"
        )
    ignored = ignored + sorted(result.unexpected_keys)
    return {
        "source": source,
        "path": str(p),
        "loaded": len(state) - len(result.unexpected_keys),
        "ignored": ignored,
        "pos_embed_resampled": resampled,
    }


# --------------------------------------------------------------------------------------------
# helpers


def _extract(ckpt: Mapping[str, Any], source: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """:func:`extract_backbone_state` plus the list of checkpoint keys that were not used."""
    if not isinstance(ckpt, Mapping):
        raise LeopartError(f"checkpoint is a {type(ckpt).__name__}, expected a dict")
    if source == "dino":
        sd = ckpt["teacher"] if isinstance(ckpt.get("teacher"), Mapping) else ckpt
        return _strip_and_filter(sd, candidates=None, drop=("head",), what="DINO")
    if source == "leopart":
        sd = ckpt["state_dict"] if isinstance(ckpt.get("state_dict"), Mapping) else ckpt
        student = [k for k in sd if isinstance(k, str) and k.startswith("model.")]
        return _strip_and_filter(sd, candidates=student or None, drop=("head", "prototypes"), what="Leopart")
    if source == "local":
        sd: Mapping[str, Any] | None = ckpt if _cls_key(ckpt) else None
        if sd is None:
            for entry in LOCAL_ENTRIES:
                if isinstance(ckpt.get(entry), Mapping) and _cls_key(ckpt[entry]):
                    sd = ckpt[entry]
                    break
        if sd is None:
            raise LeopartError(
                "no ViT state dict found (no key ending in 'cls_token' at the top level or under "
                f"{', '.join(repr(e) for e in LOCAL_ENTRIES)})"
            )
        return _strip_and_filter(sd, candidates=None, drop=("head", "prototypes"), what="local")
    raise LeopartError(f"source {source!r}: expected one of dino, leopart, local")


def _from_dinov2_release(state: dict[str, torch.Tensor], model: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A state dict of the official DINOv2 release (``dinov2_vits14[_reg4]_pretrain.pth``) in
    timm's layout, as timm converts it: ``mask_token`` dropped (only used in training),
    ``register_tokens`` → ``reg_token``, ``mlp.w12``/``mlp.w3`` → ``mlp.fc1``/``mlp.fc2``
    (SwiGLU of ViT-g). For a model whose positional embedding has no class entry (timm's
    ``*_reg4_dinov2``), the release's class entry, which is added to the CLS token only, is folded
    into ``cls_token`` and removed from ``pos_embed`` — the same function of the input.

    Returns the converted dict and the keys that were dropped.
    """
    import re

    out: dict[str, torch.Tensor] = {}
    dropped = ["mask_token"] if "mask_token" in state else []
    for k, v in state.items():
        if k == "mask_token":
            continue
        if k == "register_tokens":
            k = "reg_token"
        k = re.sub(r"^(blocks\.\d+\.mlp\.)w12\.", r"\1fc1.", k)
        k = re.sub(r"^(blocks\.\d+\.mlp\.)w3\.", r"\1fc2.", k)
        out[k] = v
    pe = out.get("pos_embed")
    if getattr(model, "no_embed_class", False) and pe is not None and "cls_token" in out:
        n_model = int(model.pos_embed.shape[1])
        side = math.isqrt(pe.shape[1] - 1)
        if pe.shape[1] != n_model and side * side == pe.shape[1] - 1:
            out["cls_token"] = out["cls_token"] + pe[:, :1]
            out["pos_embed"] = pe[:, 1:]
    return out, dropped


def _strip_and_filter(
    sd: Mapping[str, Any],
    candidates: list[str] | None,
    drop: tuple[str, ...],
    what: str,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    keys = [k for k in sd if isinstance(k, str)] if candidates is None else candidates
    cls_key = _cls_key(keys)
    if cls_key is None:
        raise LeopartError(f"{what} checkpoint has no key ending in 'cls_token' (first keys: {_first(keys)})")
    prefix = cls_key[: -len("cls_token")]
    state: dict[str, torch.Tensor] = {}
    for k in keys:
        v = sd[k]
        if not k.startswith(prefix) or not isinstance(v, torch.Tensor):
            continue
        name = k[len(prefix):]
        if any(d in name for d in drop):
            continue
        state[name] = v
    used = {prefix + k for k in state}
    ignored = [str(k) for k in sd if k not in used]
    return state, ignored


def _cls_key(keys: Any) -> str | None:
    """The first string key (in dict order) ending in ``cls_token``, or None."""
    found = [k for k in keys if isinstance(k, str) and k.endswith("cls_token")]
    return found[0] if found else None


def _is_head_key(key: str) -> bool:
    return "head" in key or "prototypes" in key


def _first(keys: list[str], n: int = 3) -> str:
    more = f", … (+{len(keys) - n})" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _corrupt(p: Path, exc: BaseException) -> LeopartError:
    detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    what = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return LeopartError(f"{p}: not a readable PyTorch checkpoint ({what})")


def _allowed_global_names() -> set[str]:
    """``module.qualname`` of every global torch's weights-only unpickler accepts here."""
    try:  # private torch API; only used to keep allowed names out of the message
        from torch._weights_only_unpickler import _get_allowed_globals

        names = set(_get_allowed_globals())
    except Exception:  # noqa: BLE001
        names = set()
    names.update(f"{g.__module__}.{g.__qualname__}" for g in _SAFE_GLOBALS)
    return names


_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
               "BINSTRING", "STRING"}


def _pickle_globals(p: Path, max_pickles: int = 6) -> list[str] | None:
    """The ``module.name`` globals a checkpoint's pickle references, found by parsing opcodes.

    Nothing is imported or executed. Reads ``<archive>/data.pkl`` of a zip checkpoint, or the
    consecutive pickles at the start of a legacy/raw pickle file (legacy torch files append raw
    storage bytes after them). Returns ``None`` if no complete pickle can be parsed (the file is
    not a pickle at all), otherwise the globals in order of first appearance.
    """
    import io
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(p):
            with zipfile.ZipFile(p) as zf:
                members = [n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
                if not members:
                    return None
                data = zf.read(members[0])
        else:
            data = p.read_bytes()
    except (OSError, zipfile.BadZipFile, ValueError):
        return None
    stream = io.BytesIO(data)
    names: list[str] = []
    parsed = 0
    while parsed < max_pickles and stream.tell() < len(data):
        pushed: list[Any] = []  # recent string arguments, for STACK_GLOBAL
        memo: dict[int, Any] = {}
        found: list[str] = []
        try:
            for op, arg, _pos in pickletools.genops(stream):
                if op.name in _STRING_OPS:
                    pushed.append(arg)
                elif op.name in ("BINPUT", "LONG_BINPUT", "PUT"):
                    memo[int(arg)] = pushed[-1] if pushed else None
                elif op.name == "MEMOIZE":
                    memo[len(memo)] = pushed[-1] if pushed else None
                elif op.name in ("BINGET", "LONG_BINGET", "GET"):
                    pushed.append(memo.get(int(arg)))
                elif op.name == "GLOBAL":
                    found.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL":
                    mod, name = (pushed[-2:] + [None, None])[:2] if len(pushed) >= 2 else (None, None)
                    found.append(f"{mod}.{name}" if isinstance(mod, str) and isinstance(name, str) else "?")
        except Exception:  # noqa: BLE001 - the end of the pickles (or not a pickle)
            break
        parsed += 1
        names.extend(n for n in found if n not in names)
    return names if parsed else None


class _MissingClass(dict):
    """Inert stand-in for a pickled class whose module is not installed (trusted loads only).

    Behaves as a dict (so dict-like objects such as Lightning's ``AttributeDict`` keep their
    items) and stores any pickled state in ``__dict__``; constructor arguments are kept in
    ``_args``.
    """

    _qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> _MissingClass:
        return dict.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_args"] = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = {**state[0], **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state

    def __repr__(self) -> str:
        return f"<missing class {self._qualname}>"


class _TolerantUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (_MissingClass,), {"_qualname": f"{module}.{name}"})


_tolerant_pickle = types.ModuleType("leopart_tolerant_pickle")
_tolerant_pickle.__dict__.update({k: v for k, v in pickle.__dict__.items() if not k.startswith("__")})
_tolerant_pickle.Unpickler = _TolerantUnpickler  # type: ignore[attr-defined]
_tolerant_pickle.load = lambda f, **kw: _TolerantUnpickler(f, **kw).load()  # type: ignore[attr-defined]
