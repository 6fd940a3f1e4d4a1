"""``python -m leopart``: audit a run, inspect an artefact, render a label-map overlay.

    python -m leopart audit results/toy [--json] [--hash-all] [-v]
    python -m leopart inspect results/toy/gt/val.npy [--rows 5]
    python -m leopart show results/toy/gt/val.npy 3 --image results/toy/dataset/val.parquet --out gt3.png

Exit status: 0 success; 1 the audit found missing, modified, stale or incomplete artefacts;
2 bad input (one line naming the file) or bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from leopart.errors import LeopartError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m leopart", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    audit = sub.add_parser("audit", help="check every artefact of a run against its provenance",
                           description="Walk results/<run>: each artefact present or missing, its "
                           "SHA-256 equal to what its producer and consumers recorded, producing stage "
                           "and code version. Exit 1 when anything is missing, modified, stale or "
                           "incomplete.")
    audit.add_argument("run_dir", help="the run folder, e.g. results/toy")
    audit.add_argument("--json", action="store_true", help="print the report as JSON")
    audit.add_argument("--hash-all", action="store_true",
                       help="also hash files above 256 MB (otherwise compared by size only and "
                       "reported 'unverified'); they verify where a record holds their SHA-256")
    audit.add_argument("--run-only", action="store_true",
                       help="skip recorded inputs outside the run folder (checkpoints, embeddings)")
    audit.add_argument("-v", "--verbose", action="store_true",
                       help="list each artefact's params and every recorded checksum")

    insp = sub.add_parser("inspect", help="shape/dtype/value summary or schema/head, plus provenance",
                          description="Describe an artefact (.npy streamed in chunks, .npz, Parquet, "
                          "JSON, CSV) and print its provenance sidecar.")
    insp.add_argument("path", help="artefact file")
    insp.add_argument("--rows", type=int, default=5, help="table/text rows to show (default 5)")

    show = sub.add_parser("show", help="write a PNG of one image of a label map (VOC palette)",
                          description="Colour one image of an (N, h, w) or (runs, N, h, w) label map "
                          "with the VOC palette; with --image, upsample (nearest) to the image and "
                          "blend.")
    show.add_argument("labels", help="label map .npy")
    show.add_argument("index", type=int, help="image index along N")
    show.add_argument("--run", type=int, default=None, help="run index of a (runs, N, h, w) map (default 0)")
    show.add_argument("--image", help="an image file, or the run's dataset manifest "
                      "(results/<run>/dataset/<split>.parquet) to take row INDEX's image from")
    show.add_argument("--alpha", type=float, default=0.5, help="colour weight in the blend (default 0.5)")
    show.add_argument("--out", default="overlay.png", help="output PNG (default overlay.png)")
    return parser


def _audit(args: argparse.Namespace) -> int:
    from leopart.audit import audit_run, format_table

    result = audit_run(args.run_dir, hash_all=args.hash_all, external=not args.run_only)
    if args.json:
        print(json.dumps(result.to_json(), indent=2, default=str))
    else:
        print(format_table(result, verbose=args.verbose))
    return 1 if result.failed else 0


def _inspect(args: argparse.Namespace) -> int:
    from leopart.inspect_artefact import describe

    print(describe(args.path, rows=args.rows))
    return 0


def _show(args: argparse.Namespace) -> int:
    from leopart.overlay import render_overlay, write_overlay

    rgb, info = render_overlay(args.labels, args.index, run=args.run, image=args.image, alpha=args.alpha)
    write_overlay(args.out, rgb)
    src = f" blended with {info['image']}" if "image" in info else ""
    src += f", enlarged ×{info['scale']}" if info["scale"] != 1 else ""
    print(f"wrote {args.out}: {rgb.shape[1]}×{rgb.shape[0]} px, map {tuple(info['map_shape'])}, "
          f"labels {info['labels_present']}{src}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run one command; returns the exit status."""
    args = _parser().parse_args(argv)
    handler = {"audit": _audit, "inspect": _inspect, "show": _show}[args.command]
    try:
        return handler(args)
    except LeopartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `| head`
        return 0
