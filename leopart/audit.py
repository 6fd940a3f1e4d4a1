"""Audit a run: every artefact under ``results/<run>/`` checked against its provenance records.

Sources of truth, all read-only:

* **Provenance records** — every JSON file of the run with a ``stage``, ``inputs`` or ``outputs``
  key: the sidecar ``x.json`` of an artefact ``x.npy`` (:func:`leopart.io.sidecar_path`), or a JSON
  artefact that embeds its own provenance (``metrics.json``, ``threshold.json``). A record's
  ``outputs`` (``{name: {path, bytes, sha256}}``) are its **producer's** checksums; its ``inputs``
  are what a **consumer** read.
* **Snakemake's metadata** (``<workdir>/.snakemake/metadata/``, one JSON per output file): which
  outputs Snakemake made and by which rule, whether a job was left incomplete, and the SHA-256 of
  the small inputs each job read (``input_checksums``).

Per artefact the audit reports one status:

=============  =====================================================================================
``ok``         present; every recorded SHA-256 (and size) equals the file's
``modified``   present, but differs from what its producer recorded — or, when no producer checksum
               exists, from what a consumer recorded
``missing``    named by a record, a sidecar or Snakemake's metadata, but the file is gone
``stale``      the artefact is itself intact, but one of its inputs changed after it was built
               (its record holds a checksum the input no longer has, while the input matches its
               own producer): it was computed from data that no longer exists
``incomplete`` Snakemake marks the job that writes it as incomplete (interrupted, or still running)
``unverified`` present, size as recorded, but no checksum to compare with: above the checksum limit
               (256 MB; sidecars record only the size) unless ``hash_all``, a directory output, or
               nobody recorded a checksum
=============  =====================================================================================

``missing``, ``modified``, ``stale`` and ``incomplete`` fail the audit (:attr:`AuditResult.failed`).
"""

from __future__ import annotations

import json
import os
from base64 import urlsafe_b64decode
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from leopart.errors import LeopartError
from leopart.io import sha256_file, sidecar_path

#: Statuses from worst to best; an artefact's status is the worst that applies.
STATUS_ORDER: tuple[str, ...] = ("missing", "modified", "incomplete", "stale", "unverified", "ok")
#: Statuses that make the audit fail (non-zero exit status).
FAILING: frozenset[str] = frozenset({"missing", "modified", "incomplete", "stale"})
#: Sub-folders of a run that hold no artefacts (per-job logs, Snakemake benchmark TSVs).
SKIP_DIRS: frozenset[str] = frozenset({"logs", "benchmarks"})
#: Files above this size are hashed only with ``hash_all`` (the limit of :func:`leopart.io.provenance`).
CHECKSUM_LIMIT_BYTES: int = 256 << 20
#: Seconds a file's modification time may exceed its job's recorded end before it is noted.
MTIME_SLACK_S: float = 2.0
#: Snakemake's marker inside a ``directory()`` output.
DIRECTORY_MARKER = ".snakemake_timestamp"


@dataclass
class Expectation:
    """One recorded fact about an artefact: its checksum and/or size as some record saw it.

    Attributes:
        source: the record that holds it — a JSON file (relative to the work folder) or
            ``snakemake:<rule>`` for Snakemake's ``input_checksums``.
        role: ``"producer"`` (the record's ``outputs``) or ``"consumer"`` (its ``inputs``).
        sha256: recorded hex digest, or None when only the size was recorded.
        bytes: recorded size in bytes, or None.
        consumers: artefacts built from this one by that record (for ``stale``); absolute while
            auditing, relative to the run folder in the report.
        match: after checking, True/False when the file could be compared, None otherwise.
    """

    source: str
    role: str
    sha256: str | None
    bytes: int | None
    consumers: list[str] = field(default_factory=list)
    match: bool | None = None


@dataclass
class ArtefactReport:
    """Audit result for one artefact. ``path`` is relative to the run folder (``scope == "run"``)
    or as recorded (``scope == "external"``: inputs outside the run, e.g. checkpoints)."""

    path: str
    status: str
    scope: str
    kind: str
    stage: str | None
    code_version: str | None
    params: dict[str, Any] | None
    record: str | None
    bytes: int | None
    sha256: str | None
    expected: list[Expectation]
    notes: list[str]


@dataclass
class AuditResult:
    """All artefact reports of one run plus where they were read from."""

    run_dir: Path
    workdir: Path
    artefacts: list[ArtefactReport]
    snakemake_metadata: bool

    @property
    def counts(self) -> dict[str, int]:
        """Number of artefacts per status (statuses that occur only)."""
        out: dict[str, int] = {}
        for a in self.artefacts:
            out[a.status] = out.get(a.status, 0) + 1
        return {s: out[s] for s in STATUS_ORDER if s in out}

    @property
    def failed(self) -> bool:
        """True when any artefact is missing, modified, stale or incomplete."""
        return any(a.status in FAILING for a in self.artefacts)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict: run folder, work folder, verdict, counts and artefacts."""
        return {
            "run_dir": str(self.run_dir),
            "workdir": str(self.workdir),
            "ok": not self.failed,
            "counts": self.counts,
            "snakemake_metadata": self.snakemake_metadata,
            "artefacts": [asdict(a) for a in self.artefacts],
        }


# ---- discovery ------------------------------------------------------------------------------


def find_workdir(run_dir: Path) -> Path:
    """The Snakemake working folder of ``run_dir``: the parent of its ``results`` ancestor.

    Recorded paths (``results/<run>/...``) are relative to it, and so is ``.snakemake/``. Without
    a ``results`` ancestor the nearest ancestor holding ``.snakemake/`` is used, else the parent.
    """
    for p in (run_dir, *run_dir.parents):
        if p.name == "results":
            return p.parent
    for p in run_dir.parents:
        if (p / ".snakemake").is_dir():
            return p
    return run_dir.parent


def _is_under(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def _walk(run_dir: Path) -> tuple[list[Path], list[Path]]:
    """Files (hidden ones and logs/benchmarks skipped) and ``directory()`` outputs of the run."""
    files: list[Path] = []
    dirs: list[Path] = []
    for top, subdirs, names in os.walk(run_dir):
        here = Path(top)
        if DIRECTORY_MARKER in names and here != run_dir:
            dirs.append(here)
            subdirs[:] = []
            continue
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(".")
                            and not (here == run_dir and d in SKIP_DIRS))
        files.extend(here / n for n in sorted(names) if not n.startswith("."))
    return files, dirs


def _read_record(path: Path) -> dict[str, Any] | None:
    """A JSON file's content when it is a provenance record (has stage/inputs/outputs), else None."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(data, dict) and any(k in data for k in ("stage", "inputs", "outputs")):
        return data
    return None


@dataclass
class _SnakemakeEntry:
    rule: str | None
    incomplete: bool
    input_checksums: dict[str, str]
    endtime: float | None = None


def read_snakemake_metadata(workdir: Path) -> dict[str, _SnakemakeEntry]:
    """Snakemake's per-output metadata, keyed by the output path as Snakemake wrote it.

    Files live under ``.snakemake/metadata/`` named by the url-safe base64 of the output path
    (long names split into ``@``-prefixed sub-folders); incomplete jobs also leave a file with the
    same naming under ``.snakemake/incomplete/``. Unreadable entries are skipped.
    """
    out: dict[str, _SnakemakeEntry] = {}
    base = workdir / ".snakemake"

    def decode(root: Path, file: Path) -> str | None:
        parts = [p.lstrip("@") for p in file.relative_to(root).parts]
        try:
            return urlsafe_b64decode("".join(parts).encode()).decode()
        except (ValueError, UnicodeDecodeError):
            return None

    meta_root = base / "metadata"
    if meta_root.is_dir():
        for top, _, names in os.walk(meta_root):
            for n in names:
                f = Path(top) / n
                name = decode(meta_root, f)
                if name is None:
                    continue
                try:
                    rec = json.loads(f.read_text())
                except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                    continue
                if not isinstance(rec, dict):
                    continue
                sums = rec.get("input_checksums") or {}
                out[name] = _SnakemakeEntry(
                    rule=rec.get("rule"), incomplete=bool(rec.get("incomplete")),
                    input_checksums={k: v for k, v in sums.items() if isinstance(v, str)},
                    endtime=rec.get("endtime") if isinstance(rec.get("endtime"), int | float) else None,
                )
    inc_root = base / "incomplete"
    if inc_root.is_dir():
        for top, _, names in os.walk(inc_root):
            for n in names:
                name = decode(inc_root, Path(top) / n)
                if name is None:
                    continue
                entry = out.setdefault(name, _SnakemakeEntry(rule=None, incomplete=True, input_checksums={}))
                entry.incomplete = True
    return out


def format_code_version(record: dict[str, Any] | None) -> str | None:
    """The producing code's version: ``code_version`` (string or mapping) when the record has it,
    else the package version from ``versions`` marked as lacking a commit."""
    if not record:
        return None
    cv = record.get("code_version")
    if isinstance(cv, str) and cv:
        return cv
    if isinstance(cv, dict) and cv:
        version = cv.get("version") or cv.get("package") or cv.get("leopart-pipeline")
        commit = cv.get("commit") or cv.get("git_commit") or cv.get("git")
        if version or commit:
            text = f"{version or '?'}"
            if commit:
                text += f"@{str(commit)[:10]}"
            if cv.get("dirty") or cv.get("git_dirty"):
                text += "+dirty"
            return text
        return ",".join(f"{k}={v}" for k, v in sorted(cv.items()))
    versions = record.get("versions")
    if isinstance(versions, dict) and versions.get("leopart-pipeline"):
        return f"{versions['leopart-pipeline']} (no commit)"
    return None


# ---- the audit --------------------------------------------------------------------------------


class _Artefact:
    """Mutable working state of one artefact during the audit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.expected: list[Expectation] = []
        self.record_path: Path | None = None
        self.record: dict[str, Any] | None = None
        self.rule: str | None = None
        self.endtime: float | None = None
        self.incomplete = False
        self.status = "ok"
        self.notes: list[str] = []
        self.size: int | None = None
        self.sha: str | None = None

    def worsen(self, status: str, note: str | None = None) -> None:
        if STATUS_ORDER.index(status) < STATUS_ORDER.index(self.status):
            self.status = status
        if note and note not in self.notes:
            self.notes.append(note)


def _entries(section: Any) -> Iterable[tuple[str, dict[str, Any]]]:
    """``(name, {path, bytes?, sha256?})`` of a record's ``inputs``/``outputs``; an entry may be one
    file record, a list of them (a rule input that is a list of files) or a bare path string."""
    if not isinstance(section, dict):
        return
    for name, value in section.items():
        for info in value if isinstance(value, list) else [value]:
            if isinstance(info, dict) and isinstance(info.get("path"), str):
                yield str(name), info
            elif isinstance(info, str):
                yield str(name), {"path": info}


def audit_run(run_dir: str | os.PathLike, *, hash_all: bool = False,
              checksum_limit_bytes: int = CHECKSUM_LIMIT_BYTES, external: bool = True) -> AuditResult:
    """Check every artefact of ``run_dir`` (``results/<run>``) against its provenance.

    Args:
        run_dir: the run's folder.
        hash_all: hash files above ``checksum_limit_bytes`` too (otherwise they are compared by
            size only and reported ``unverified``).
        checksum_limit_bytes: size above which files are not hashed unless ``hash_all``.
        external: also check inputs recorded outside the run folder (checkpoints, embeddings).

    Raises:
        LeopartError: ``run_dir`` is not a folder, or holds neither artefacts nor records.
    """
    run = Path(run_dir).absolute()
    if not run.is_dir():
        raise LeopartError(f"{run_dir}: run folder is missing (expected results/<run>)")
    workdir = find_workdir(run)

    def resolve(p: str) -> Path:
        q = Path(p)
        return Path(os.path.normpath(q if q.is_absolute() else workdir / q))

    files, dir_outputs = _walk(run)
    arts: dict[Path, _Artefact] = {}

    def art(p: Path) -> _Artefact:
        if p not in arts:
            arts[p] = _Artefact(p)
        return arts[p]

    # 1. provenance records among the run's JSON files
    records: dict[Path, dict[str, Any]] = {}
    for f in files:
        if f.suffix == ".json":
            rec = _read_record(f)
            if rec is not None:
                records[f] = rec

    # 2. Snakemake's view (only outputs inside this run)
    smk = read_snakemake_metadata(workdir)
    smk_outputs = {resolve(k): v for k, v in smk.items()}
    smk_outputs = {k: v for k, v in smk_outputs.items() if _is_under(k, run)}

    # 3. the artefact set: data files on disk, directory outputs, every path a record or
    #    Snakemake names; then JSON files that are no other artefact's sidecar
    named: set[Path] = set()
    for rec_path, rec in records.items():
        for section in ("inputs", "outputs"):
            for _, info in _entries(rec.get(section)):
                p = resolve(info["path"])
                if p != rec_path and (external or _is_under(p, run)):
                    named.add(p)
    named.update(smk_outputs)
    candidates = {f for f in files if f.suffix != ".json"} | set(dir_outputs) | named
    # files inside directory() outputs belong to the directory
    candidates = {p for p in candidates
                  if not any(p != d and _is_under(p, d) for d in dir_outputs)}
    sidecar_of: dict[Path, list[Path]] = {}
    for p in candidates:
        if p.suffix != ".json":
            sidecar_of.setdefault(sidecar_path(p), []).append(p)
    for f in files:
        if f.suffix == ".json" and f not in sidecar_of:
            candidates.add(f)
    for p in sorted(candidates):
        art(p)

    # 4. which artefacts each record describes (sidecar, embedded, or ``outputs``)
    describes: dict[Path, list[Path]] = {}
    for rec_path, rec in records.items():
        targets = list(sidecar_of.get(rec_path, []))
        if rec_path in arts:
            targets.append(rec_path)
        for _, info in _entries(rec.get("outputs")):
            p = resolve(info["path"])
            if p != rec_path:
                targets.append(p)
        describes[rec_path] = sorted(set(targets))
        for t in describes[rec_path]:
            a = art(t)
            if a.record_path is None or t in sidecar_of.get(rec_path, []) or t == rec_path:
                a.record_path, a.record = rec_path, rec

    def label(p: Path) -> str:
        return str(p.relative_to(workdir)) if _is_under(p, workdir) else str(p)

    def short(p: Path) -> str:
        return str(p.relative_to(run)) if _is_under(p, run) else label(p)

    # 5. expectations
    for rec_path, rec in records.items():
        consumers = [str(t) for t in describes[rec_path]]
        for role, section in (("producer", "outputs"), ("consumer", "inputs")):
            for _, info in _entries(rec.get(section)):
                p = resolve(info["path"])
                if p == rec_path or p not in arts:
                    continue
                sha = info.get("sha256") if isinstance(info.get("sha256"), str) else None
                size = info.get("bytes") if isinstance(info.get("bytes"), int) else None
                exp = Expectation(short(rec_path), role, sha, size,
                                  consumers if role == "consumer" else [])
                if not any(e.source == exp.source and e.role == role and e.sha256 == sha
                           and e.bytes == size for e in arts[p].expected):
                    arts[p].expected.append(exp)
    for out_path, entry in smk_outputs.items():
        a = art(out_path)
        a.rule = a.rule or entry.rule
        a.endtime = entry.endtime
        a.incomplete = a.incomplete or entry.incomplete
        for in_name, value in entry.input_checksums.items():
            p = resolve(in_name)
            if p not in arts or not value.startswith("sha256:"):
                continue
            source = f"snakemake:{entry.rule}"
            sha = value.split(":", 1)[1]
            existing = [e for e in arts[p].expected if e.source == source and e.sha256 == sha]
            if existing:
                if str(out_path) not in existing[0].consumers:
                    existing[0].consumers.append(str(out_path))
            else:
                arts[p].expected.append(Expectation(source, "consumer", sha, None, [str(out_path)]))

    # 6. check each artefact against its expectations
    stale_marks: list[tuple[str, str]] = []
    for p, a in arts.items():
        if a.incomplete:
            a.worsen("incomplete", "Snakemake marks its job incomplete (interrupted or running)")
        if not p.exists():
            a.worsen("missing", _missing_note(a, short))
            continue
        if p.is_dir():
            a.worsen("unverified", "directory output: contents not checksummed")
            continue
        a.size = p.stat().st_size
        want_hash = any(e.sha256 for e in a.expected) or hash_all
        if want_hash and (a.size <= checksum_limit_bytes or hash_all):
            a.sha = sha256_file(p)
        for e in a.expected:
            if e.bytes is not None and e.bytes != a.size:
                e.match = False
            elif e.sha256 is not None and a.sha is not None:
                e.match = e.sha256 == a.sha
        producer_bad = [e for e in a.expected if e.role == "producer" and e.match is False]
        producer_ok = any(e.role == "producer" and e.match for e in a.expected)
        consumer_bad = [e for e in a.expected if e.role == "consumer" and e.match is False]
        if producer_bad:
            a.worsen("modified", "differs from what its producer recorded "
                     f"({_diff(producer_bad[0], a)}, {producer_bad[0].source})")
        elif consumer_bad and not producer_ok:
            a.worsen("modified", f"differs from what {consumer_bad[0].source} recorded "
                     f"({_diff(consumer_bad[0], a)})")
        elif consumer_bad:
            for e in consumer_bad:
                for c in e.consumers:
                    stale_marks.append((c, f"built from an older {short(p)}"))
        if any(e.match for e in a.expected):
            continue
        if a.status == "ok" and a.endtime is not None and p.stat().st_mtime > a.endtime + MTIME_SLACK_S:
            a.notes.append("file time is later than the end of the Snakemake job that wrote it")
        if a.status in ("ok",):
            if any(e.sha256 for e in a.expected) and a.sha is None:
                a.worsen("unverified", f"{a.size / 2**20:.0f} MB above the checksum limit: size "
                         "checked only (--hash-all hashes it)")
            elif any(e.bytes is not None for e in a.expected):
                a.worsen("unverified", "size as recorded; no checksum recorded (large file)")
            else:
                a.worsen("unverified", "no checksum recorded by its producer or any consumer")
    for c, note in stale_marks:
        a = arts.get(Path(c))
        if a is not None and a.status in ("ok", "unverified"):
            a.status = "ok"
            a.worsen("stale", note)
        elif a is not None:
            a.notes.append(note)

    if not arts:
        raise LeopartError(f"{run_dir}: no artefacts or provenance sidecars found "
                           "(expected a results/<run> folder)")

    for a in arts.values():
        for e in a.expected:
            e.consumers = [short(Path(c)) for c in e.consumers]
    reports = []
    for p in sorted(arts):
        a = arts[p]
        rec = a.record
        inside = _is_under(p, run)
        stage = (rec or {}).get("stage") or a.rule
        reports.append(ArtefactReport(
            path=str(p.relative_to(run)) if inside else label(p),
            status=a.status, scope="run" if inside else "external",
            kind="directory" if p.is_dir() else "file",
            stage=str(stage) if stage else None,
            code_version=format_code_version(rec),
            params=rec.get("params") if rec and isinstance(rec.get("params"), dict) else None,
            record=label(a.record_path) if a.record_path else None,
            bytes=a.size, sha256=a.sha, expected=a.expected, notes=a.notes,
        ))
    return AuditResult(run_dir=run, workdir=workdir, artefacts=reports,
                       snakemake_metadata=(workdir / ".snakemake" / "metadata").is_dir())


def _missing_note(a: _Artefact, short: Any) -> str:
    by: list[str] = []
    own = short(a.record_path) if a.record_path is not None else None
    if own is not None:
        by.append(f"sidecar {own}")
    by.extend(s for s in dict.fromkeys(e.source for e in a.expected) if s != own)
    if a.rule:
        by.append(f"snakemake:{a.rule} metadata")
    if not by:
        return "file is gone"
    more = f" and {len(by) - 2} more" if len(by) > 2 else ""
    return "file is gone; named by " + ", ".join(by[:2]) + more


def _diff(e: Expectation, a: _Artefact) -> str:
    if e.bytes is not None and e.bytes != a.size:
        return f"{a.size} bytes, recorded {e.bytes}"
    return f"sha256 {(a.sha or '?')[:12]}, recorded {(e.sha256 or '?')[:12]}"


# ---- output ---------------------------------------------------------------------------------


def format_table(result: AuditResult, *, verbose: bool = False) -> str:
    """A fixed-width table: status, artefact, producer stage, code version, first note; then a
    summary line. ``verbose`` adds each artefact's params and all expectations."""
    rows = [("STATUS", "ARTEFACT", "STAGE", "CODE", "DETAIL")]
    for a in result.artefacts:
        rows.append((a.status, a.path if a.scope == "run" else f"[ext] {a.path}", a.stage or "-",
                     a.code_version or "-", "; ".join(a.notes) if a.notes else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + ("  " + r[4] if r[4] else ""))
        if verbose and i > 0:
            a = result.artefacts[i - 1]
            if a.params:
                lines.append("    params: " + json.dumps(a.params, sort_keys=True, default=str))
            for e in a.expected:
                mark = {True: "=", False: "!=", None: "?"}[e.match]
                lines.append(f"    {mark} {e.role} {e.source}: sha256 {(e.sha256 or '-')[:12]} bytes {e.bytes}")
    counts = ", ".join(f"{n} {s}" for s, n in result.counts.items())
    verdict = "FAILED" if result.failed else "passed"
    smk = "" if result.snakemake_metadata else " (no .snakemake/metadata found beside results/)"
    lines.append(f"{len(result.artefacts)} artefacts: {counts} — audit {verdict}{smk}")
    return "\n".join(lines)
