"""A pinned infomap build in a folder of its own, for the ``authors`` behaviour of ``cd.infomap``.

The authors ran infomap 2.2.0; the project's environment has a current release (2.16), whose
``preferred_number_of_modules`` forces the module count where 2.2.0 only prefers it. 2.2.0 is an
sdist and cannot share a process with 2.16 (same module name) nor safely with faiss (SWIG runtime
clash, see :mod:`leopart.cd.communities`), so it is installed with ``pip install --target`` into
``<root>/infomap-2.2.0-<python tag>/`` and used only by :mod:`leopart.cd.infomap_worker`
processes started with that folder first on ``PYTHONPATH``.

The build (pinned by ``leopart/cd/envs/infomap-2.2.0.txt`` with the sdist's sha256; build
dependency ``setuptools<70`` from ``infomap-2.2.0.build-constraints.txt``) needs PyPI (or a pip
cache holding the wheel built before) and a C++ compiler; it compiles for ~3 CPU-minutes.
:func:`ensure_infomap_env` is idempotent and safe to call from parallel jobs: it builds under an
exclusive file lock into a temporary folder next to the destination, checks that the build
imports as the pinned version, writes a manifest, and renames the folder into place, so a folder
under the final name is always complete.

Command line (the ``infomap_env`` rule)::

    python -m leopart.cd.infomap_env [--root resources/envs] [--manifest OUT.json]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from leopart.errors import LeopartError

__all__ = ["AUTHORS_VERSION", "ENV_VAR", "default_root", "env_path", "read_manifest", "ensure_infomap_env",
           "worker_environ", "main"]

log = logging.getLogger(__name__)

AUTHORS_VERSION = "2.2.0"
"""The infomap release of the authors' environment (``cd.infomap: authors``)."""

ENV_VAR = "LEOPART_INFOMAP_ENVS"
"""Environment variable overriding the default root folder of the pinned builds."""

MANIFEST = "leopart-infomap-env.json"
_SPECS = Path(__file__).resolve().parent / "envs"
_PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # the folder holding the ``leopart`` package

Installer = Callable[[Path, str], None]


def default_root() -> Path:
    """``$LEOPART_INFOMAP_ENVS`` if set, else ``resources/envs`` under the working directory."""
    return Path(os.environ.get(ENV_VAR) or "resources/envs")


def env_path(version: str = AUTHORS_VERSION, root: str | Path | None = None) -> Path:
    """Folder of the build of ``version`` for this interpreter: ``<root>/infomap-<version>-<cpython-311>``."""
    root = default_root() if root is None else Path(root)
    return root / f"infomap-{version}-{sys.implementation.cache_tag}"


def _spec_files(version: str) -> tuple[Path, Path]:
    req, constraints = _SPECS / f"infomap-{version}.txt", _SPECS / f"infomap-{version}.build-constraints.txt"
    if not req.is_file():
        raise LeopartError(f"cd.infomap: no pinned requirements for infomap {version} ({req} is missing)")
    return req, constraints


def read_manifest(path: str | Path) -> dict | None:
    """The manifest of a complete build folder, or ``None`` when the folder is absent or incomplete."""
    try:
        with open(Path(path) / MANIFEST, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def worker_environ(path: str | Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a worker process: the build folder first on ``PYTHONPATH``, then ``leopart``.

    The running interpreter's site-packages (with the project's own infomap) come after
    ``PYTHONPATH``, so ``import infomap`` in the worker finds the pinned build.
    """
    env = dict(os.environ if base is None else base)
    parts = [str(Path(path).resolve()), str(_PACKAGE_PARENT)]
    if env.get("PYTHONPATH"):
        parts.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


def _pip_supports_build_constraint(python: str) -> bool:
    out = subprocess.run([python, "-m", "pip", "--version"], capture_output=True, text=True, check=False)
    try:
        major, minor = (int(x) for x in out.stdout.split()[1].split(".")[:2])
    except (IndexError, ValueError):
        return False
    return (major, minor) >= (25, 3)


def pip_install(target: Path, version: str, python: str = sys.executable) -> None:
    """``pip install --target`` the pinned ``infomap==version`` (hash-checked, no dependencies)."""
    req, constraints = _spec_files(version)
    cmd = [python, "-m", "pip", "install", "--no-deps", "--no-input", "--disable-pip-version-check",
           "--target", str(target), "--require-hashes", "-r", str(req)]
    env = dict(os.environ)
    if constraints.is_file():
        if _pip_supports_build_constraint(python):
            cmd += ["--build-constraint", str(constraints)]
        else:  # older pip applies PIP_CONSTRAINT inside the isolated build environment too
            env["PIP_CONSTRAINT"] = str(constraints)
    log.info("building infomap %s: %s", version, " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-6:])
        raise LeopartError(f"cd.infomap: building infomap {version} with pip failed "
                           f"(needs PyPI or a pip cache and a C++ compiler): {tail}")


def _check_import(path: Path, version: str, python: str) -> dict:
    code = ("import json, sys, infomap; "
            "print(json.dumps({'version': infomap.__version__, 'file': infomap.__file__}))")
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, env=worker_environ(path), check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise LeopartError(f"cd.infomap: the infomap build in {path} does not import: {last}")
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    if found["version"] != version or not Path(found["file"]).resolve().is_relative_to(path.resolve()):
        raise LeopartError(f"cd.infomap: {path} should provide infomap {version}, "
                           f"python imported {found['version']} from {found['file']}")
    return found


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_infomap_env(version: str = AUTHORS_VERSION, root: str | Path | None = None, *,
                       python: str = sys.executable, installer: Installer | None = None) -> Path:
    """Return the folder of a complete infomap ``version`` build, building it first if needed.

    Args:
        version: infomap release; needs ``leopart/cd/envs/infomap-<version>.txt``.
        root: folder of the builds (default :func:`default_root`); created if missing.
        python: interpreter the build is for (its ABI tag is in the folder name).
        installer: ``installer(target_folder, version)`` that installs infomap into the folder
            (default: :func:`pip_install`; tests pass a stub).

    Returns:
        :func:`env_path` ``(version, root)``, holding ``infomap`` and a manifest JSON (version,
        interpreter, build seconds, date).

    Raises:
        LeopartError: the build failed or does not import as ``version``.
    """
    path = env_path(version, root)
    manifest = read_manifest(path)
    if manifest is not None and manifest.get("version") == version:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.parent / f".{path.name}.lock"):
        manifest = read_manifest(path)  # another job may have finished the build while we waited
        if manifest is not None and manifest.get("version") == version:
            return path
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        try:
            start = time.monotonic()
            (installer or pip_install)(tmp, version)
            seconds = time.monotonic() - start
            found = _check_import(tmp, version, python)
            manifest = {"version": found["version"], "python": sys.version.split()[0],
                        "python_tag": sys.implementation.cache_tag, "build_seconds": round(seconds, 1),
                        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            with open(tmp / MANIFEST, "w", encoding="utf-8") as fh:
                json.dump(manifest, fh, indent=1)
            if path.exists():  # an incomplete folder (no manifest) left by an interrupted older layout
                shutil.rmtree(path)
            os.rename(tmp, path)
            log.info("infomap %s built in %.0f s into %s", version, seconds, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return path


def main(argv: list[str] | None = None) -> int:
    """CLI: build (if needed) and print the folder; ``--manifest`` copies the manifest there."""
    parser = argparse.ArgumentParser(prog="python -m leopart.cd.infomap_env", description=__doc__.split("\n")[0])
    parser.add_argument("--version", default=AUTHORS_VERSION)
    parser.add_argument("--root", default=None, help=f"folder of the builds (default ${ENV_VAR} or resources/envs)")
    parser.add_argument("--manifest", default=None, help="also write the build's manifest (plus its folder) here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = ensure_infomap_env(args.version, args.root)
    except LeopartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.manifest:
        out = Path(args.manifest)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps({**read_manifest(path), "path": str(path.resolve())}, indent=1), encoding="utf-8")
        os.replace(tmp, out)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
