"""`swa-stream demo-data TASK --out DIR`: write a synthetic data set to train and test a demo model."""

from __future__ import annotations

import sys
from pathlib import Path

from swa_stream.errors import SWAStreamError
from swa_stream.pipelines.safe_output import os_problem, probe_folder


def _check_out(out: Path) -> None:
    """Refuse a folder that cannot be written before generating anything (it can take minutes)."""
    if out.exists() and not out.is_dir():
        raise SWAStreamError(f"{out}: exists and is not a folder")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise SWAStreamError(f"{out}: cannot write: {existing} is not a folder")
    probe_folder(existing, out)


def run(args) -> None:
    if not args.out:
        raise SWAStreamError("--out: an empty path; give a folder")
    out = Path(args.out)
    _check_out(out)
    try:
        _write(args, out)
    except OSError as err:  # e.g. the disk filled up while writing
        raise os_problem(Path(err.filename) if err.filename else out, err) from None


def _write(args, out: Path) -> None:
    if args.task == "dna":
        from swa_stream.tasks.dna.synthetic import min_length, write_benchmark

        shortest = min_length(max(0, args.edge_margin))
        if min(args.n_train, args.n_val, args.n_test) < 1 or args.length < shortest or args.edge_margin < 0:
            raise SWAStreamError(
                f"demo-data dna: every split needs >= 1 record, --edge-margin >= 0 and --length >= {shortest} bp"
            )
        write_benchmark(
            out, args.n_train, args.n_val, args.n_test, args.length, seed=args.seed, edge_margin=args.edge_margin,
            progress=lambda split, n: print(f"wrote {n} {split} records", file=sys.stderr),
        )
        print(f"DNA long-range benchmark in {out}: train/val/test .fa, .labels.tsv, .bed, classes.txt")
    elif args.task == "asr":
        from swa_stream.tasks.asr.synthetic import describe, main_progress, write_dataset

        if min(args.n_train, args.n_val, args.n_test) < 1 or args.jobs < 0:
            raise SWAStreamError("demo-data asr: every split needs >= 1 utterance and --jobs must be >= 0")
        counts = {"train": args.n_train, "val": args.n_val, "test": args.n_test}
        splits = write_dataset(out, counts, seed=args.seed, jobs=args.jobs or None, progress=main_progress)
        print(f"spoken digits in {out}: train/val/test .jsonl manifests, wav/, voices.json ({describe(splits)})")
