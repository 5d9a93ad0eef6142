"""`swa-stream score-fasta IN.fa [...] --out OUT.zarr`: score every FASTA record, resumably.

Layout while running (bio2zarr's pattern: work in progress, per-record completion, then finalise):

    OUT.zarr.partial/run.json           the inputs and options; a rerun must match them
    OUT.zarr.partial/done/<n>.json      record n's results, written atomically once it is complete
    OUT.zarr.partial/store.zarr/        the zarr v3 group being filled: tracks/<n> per record

Record n belongs to one process only, and its track is its own array, so concurrent writers never
share a chunk or a shard. When every record is done, one process writes the per-record arrays
(records/*), the metadata and the TSV, consolidates, renames store.zarr to OUT.zarr and removes the
partial folder. A killed run loses at most the records in flight; rerunning the same command skips
the finished ones.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import zarr
from tqdm import tqdm

from swa_stream import __version__
from swa_stream.errors import SWAStreamError
from swa_stream.tasks.dna.model import DNAModel, score_record
from swa_stream.tasks.dna.tokenizer import FastaRecord, read_fasta, reverse_complement

TRACK_CHUNK = 1 << 16


@dataclass
class ScoreOptions:
    per_position: bool = False
    rc_average: bool = False
    chunk_size: int = 1 << 14
    batch_size: int = 16


class TrackWriter:
    """Writes one record's per-position probabilities into its own zarr array, chunk-aligned.

    The forward strand arrives in order from position 0; with reverse-complement averaging the
    reverse strand then arrives in reverse-complement coordinates and is averaged in place."""

    def __init__(self, group: zarr.Group, name: str, length: int, n_tracks: int):
        chunk = max(1, min(length, TRACK_CHUNK))
        self.array = group.create_array(
            name, shape=(length, n_tracks), chunks=(chunk, n_tracks), dtype="float32", overwrite=True
        )
        self.length = length

    def __call__(self, start: int, probs: np.ndarray, strand: int = 1) -> None:
        if strand == 1:
            self.array[start : start + len(probs)] = probs
        else:  # rc position j is forward position length-1-j
            stop = self.length - start
            lo = stop - len(probs)
            self.array[lo:stop] = (self.array[lo:stop] + probs[::-1]) / 2


def _record_result(rec: FastaRecord, number: int, probs: np.ndarray) -> dict:
    return {
        "number": number,
        "file": rec.file,
        "record_index": rec.index,
        "id": rec.id,
        "length": rec.length,
        "n_fraction": rec.n_fraction,
        "had_iupac": rec.had_iupac,
        "empty": rec.length == 0,
        "probs": [float(p) for p in probs],
    }


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Run:
    """The partial folder of one scoring run."""

    def __init__(self, out: Path, inputs: list[Path], model_dir: str, options: ScoreOptions, command: str = ""):
        self.command = command
        self.out, self.partial = out, out.with_name(out.name + ".partial")
        self.done_dir, self.store_path = self.partial / "done", self.partial / "store.zarr"
        stats = [{"path": str(p.resolve()), "size": p.stat().st_size, "mtime": int(p.stat().st_mtime)} for p in inputs]
        self.manifest = {"inputs": stats, "model": str(model_dir), "options": vars(options)}

    def open(self) -> zarr.Group:
        """Create the partial folder, or check that the existing one belongs to the same command."""
        run_json = self.partial / "run.json"
        if run_json.is_file():
            previous = json.loads(run_json.read_text())
            if previous != self.manifest:
                raise SWAStreamError(
                    f"{self.partial}: an unfinished run with other inputs, model or options; "
                    "rerun that command, or remove the folder to start over"
                )
        else:
            self.done_dir.mkdir(parents=True, exist_ok=True)
            zarr.open_group(self.store_path, mode="a")
            _write_atomically(run_json, json.dumps(self.manifest, indent=2))
        return zarr.open_group(self.store_path, mode="a")

    def finished(self) -> set[int]:
        return {int(p.stem) for p in self.done_dir.glob("*.json")}

    def mark_done(self, result: dict) -> None:
        _write_atomically(self.done_dir / f"{result['number']}.json", json.dumps(result))


def _records(inputs: list[Path]):
    number = 0
    for path in inputs:
        for rec in read_fasta(path):
            yield number, rec
            number += 1


def _score_batch(model: DNAModel, batch: list[tuple[int, FastaRecord]], options: ScoreOptions, group, run: Run):
    """Short records (at most one chunk) run offline as one padded batch, which equals streaming them
    (padding is exact); each long record streams through step/flush in `chunk_size` pieces."""
    if len(batch) == 1 and batch[0][1].length > options.chunk_size:
        number, rec = batch[0]
        writer = TrackWriter(group, f"tracks/{number}", rec.length, len(model.tracks)) if options.per_position else None
        run.mark_done(_record_result(rec, number, score_record(model, rec.tokens, options.chunk_size,
                                                                options.rc_average, writer)))
        return
    strands = [[rec.tokens for _, rec in batch]]
    if options.rc_average:
        strands.append([reverse_complement(rec.tokens) for _, rec in batch])
    probs, tracks = [], []
    for seqs in strands:
        lengths = torch.tensor([len(t) for t in seqs])
        tokens = torch.full((len(seqs), max(1, int(lengths.max()))), 4, dtype=torch.long)
        for i, t in enumerate(seqs):
            tokens[i, : len(t)] = torch.from_numpy(t.astype(np.int64))
        class_logits, track_logits = model(tokens.to(model.class_head.weight.device), lengths)
        probs.append(class_logits.float().softmax(-1).cpu().numpy())
        tracks.append(torch.sigmoid(track_logits.float()).cpu().numpy())
    for i, (number, rec) in enumerate(batch):
        if options.per_position:
            track = tracks[0][i, : rec.length]
            if options.rc_average:
                track = (track + tracks[1][i, : rec.length][::-1]) / 2
            TrackWriter(group, f"tracks/{number}", rec.length, len(model.tracks))(0, track)
        run.mark_done(_record_result(rec, number, sum(p[i] for p in probs) / len(probs)))


def score(
    inputs: list[str],
    out: str,
    model: DNAModel,
    model_dir: str,
    options: ScoreOptions,
    tsv: str | None = None,
    rank: int = 0,
    world_size: int = 1,
    barrier=lambda: None,
    command: str = "",
) -> dict:
    """Score every record of `inputs` into `out`; this process takes records n with n % world_size == rank."""
    paths = [Path(p) for p in inputs]
    for p in paths:
        if not p.is_file():
            raise SWAStreamError(f"{p}: no such file")
    out_path = Path(out)
    run = Run(out_path, paths, model_dir, options, command)
    if out_path.exists() and not run.partial.exists():
        raise SWAStreamError(f"{out_path}: already exists and is complete; remove it or choose another --out")
    if rank == 0:
        run.open()
    barrier()
    group = run.open()
    finished = run.finished()
    skipped = scored = bases = 0
    started = time.perf_counter()
    bar = tqdm(desc="scoring", unit=" records", file=sys.stderr, disable=rank != 0 or None)
    pending: list[tuple[int, FastaRecord]] = []

    def flush_pending() -> None:
        nonlocal scored, bases
        if not pending:
            return
        _score_batch(model, pending, options, group, run)
        scored += len(pending)
        bases += sum(rec.length for _, rec in pending) * (2 if options.rc_average else 1)
        bar.update(len(pending))
        bar.set_postfix_str(f"{bases / max(1e-9, time.perf_counter() - started) / 1e3:,.0f} kbp/s")
        pending.clear()

    with torch.inference_mode():
        for number, rec in _records(paths):
            if number % world_size != rank:
                continue
            if number in finished:
                skipped += 1
                continue
            widest = max([rec.length] + [r.length for _, r in pending])
            if pending and (len(pending) >= options.batch_size or (len(pending) + 1) * widest > options.chunk_size):
                flush_pending()  # keep a padded batch within one chunk's worth of positions
            pending.append((number, rec))
            if rec.length > options.chunk_size:
                flush_pending()
        flush_pending()
    bar.close()
    if skipped and rank == 0:
        print(f"skipped {skipped} records finished by an earlier run", file=sys.stderr)
    barrier()
    summary = {"scored": scored, "skipped": skipped, "bases": bases, "seconds": time.perf_counter() - started}
    if rank == 0:
        summary["records"] = finalise(run, model, options, tsv)
    return summary


def finalise(run: Run, model: DNAModel, options: ScoreOptions, tsv: str | None) -> int:
    results = [json.loads(p.read_text()) for p in run.done_dir.glob("*.json")]
    results.sort(key=lambda r: r["number"])
    if [r["number"] for r in results] != list(range(len(results))):
        raise SWAStreamError(f"{run.partial}: some records are not finished; rerun the same command")
    group = zarr.open_group(run.store_path, mode="a")
    n = len(results)

    def column(name, values, dtype):
        arr = group.create_array(f"records/{name}", shape=(n,), chunks=(max(1, n),), dtype=dtype, overwrite=True)
        if n:
            arr[:] = np.asarray(values, dtype=None if dtype is str else dtype)

    column("file", [r["file"] for r in results], str)
    column("id", [r["id"] for r in results], str)
    column("record_index", [r["record_index"] for r in results], "int64")
    column("length", [r["length"] for r in results], "int64")
    column("n_fraction", [r["n_fraction"] for r in results], "float32")
    column("had_iupac", [r["had_iupac"] for r in results], "bool")
    column("empty", [r["empty"] for r in results], "bool")
    probs = group.create_array(
        "records/probs", shape=(n, len(model.classes)), chunks=(max(1, n), len(model.classes)),
        dtype="float32", overwrite=True,
    )
    if n:
        probs[:] = np.asarray([r["probs"] for r in results], dtype=np.float32)
    group.attrs.update(
        {
            "swa_stream_version": __version__,
            "model": run.manifest["model"],
            "classes": model.classes,
            "tracks": model.tracks if options.per_position else [],
            "options": vars(options),
            "command": run.command,
        }
    )
    if tsv:
        write_tsv(tsv, results, model.classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "consolidated metadata is not part of the v3 spec" is known
        zarr.consolidate_metadata(run.store_path)
    os.replace(run.store_path, run.out)
    shutil.rmtree(run.partial)
    return n


def write_tsv(path: str, results: list[dict], classes: list[str]) -> None:
    lines = ["\t".join(["file", "record_index", "id", "length"] + [f"p_{c}" for c in classes])]
    for r in results:
        lines.append("\t".join([r["file"], str(r["record_index"]), r["id"], str(r["length"])]
                               + [f"{p:.6f}" for p in r["probs"]]))
    _write_atomically(Path(path), "\n".join(lines) + "\n")


def run(args) -> None:
    from swa_stream.pipelines.bundles import default_model_dir, load_dna_model

    for name in ("chunk_size", "batch_size", "devices"):
        if getattr(args, name) < 1:
            raise SWAStreamError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    options = ScoreOptions(args.per_position, args.rc_average, args.chunk_size, args.batch_size)
    model_dir = args.model or str(default_model_dir("dna"))
    kwargs = dict(inputs=args.inputs, out=args.out, model_dir=model_dir, options=options, tsv=args.tsv,
                  command=shlex.join(["swa-stream", *args.argv]))
    if args.devices == 1:
        summary = score(model=load_dna_model(model_dir), **kwargs)
    else:
        from lightning.fabric import Fabric

        fabric = Fabric(accelerator="auto", devices=args.devices, strategy="ddp")
        fabric.launch()  # starts the other processes; each scores the records n with n % N == its rank
        if fabric.device.type == "cpu":
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // fabric.world_size))
        model = load_dna_model(model_dir).to(fabric.device)
        summary = score(model=model, rank=fabric.global_rank, world_size=fabric.world_size,
                        barrier=fabric.barrier, **kwargs)
        if fabric.global_rank != 0:
            return
    rate = summary["bases"] / max(summary["seconds"], 1e-9) / 1e3
    print(
        f"scored {summary['scored']} records ({summary['skipped']} skipped as already done) in "
        f"{summary['seconds']:.1f} s, {rate:,.0f} kbp/s; {summary['records']} records in {args.out}"
        + (f" and {args.tsv}" if args.tsv else "")
    )
