"""`swa-stream score-fasta IN [...] --out OUT.zarr`: score every record, resumably, into O(1) files.

Inputs are FASTA, FASTQ, GenBank, EMBL or CSV/TSV, plain, gzip, bzip2 or xz (all detected by content), files or
streams ("-" is stdin).
Every output path is checked before any work (pipelines/safe_output.py); the run's folder, its lock, its
append-only logs and finalising are in pipelines/fasta_store.py. Every process cuts the same batches, and
batch b belongs to the process with b % world_size == rank; each process appends to its own log and track
file, so writers never share one.
A killed run loses at most the last uncommitted batch; rerunning the same command skips what is logged,
after checking that the weights, the options, the inputs' fingerprints and each skipped record's content
are what the earlier run scored.
`--windows W` scores W bp windows of each record (every `--stride` bp, on both strands unless told) as
records of their own, for a classifier trained on short records (ecoli-promoters: 81 bp) and a genome to scan.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from swa_stream import __version__
from swa_stream.errors import SWAStreamError
from swa_stream.pipelines.fasta_store import (
    RankLog,
    RunFolder,
    Store,
    all_entries,
    build_store,
    finish,
    finished_records,
    mark_complete,
    track_means,
)
from swa_stream.pipelines.safe_output import (
    atomic_text,
    check_output_file,
    first_line,
    is_stdout,
    os_problem,
    probe_folder,
)
from swa_stream.tasks.dna.formats import read_sequences
from swa_stream.tasks.dna.model import DNAModel, score_record
from swa_stream.tasks.dna.tokenizer import (
    N_TOKEN,
    STDIN_PATH,
    FastaRecord,
    check_inputs,
    fingerprint,
    is_stream,
    n_fraction,
    reverse_complement,
)
from swa_stream.tasks.dna.track import mask_n

TSV_HEAD = ["file", "record_index", "id", "length"]
WINDOW_HEAD = ["seq_id", "start", "end", "strand"]  # --windows: BED's coordinates (0-based start, end exclusive)
STRANDS = {"both": ("+", "-"), "+": ("+",), "-": ("-",)}


@dataclass
class ScoreOptions:
    per_position: bool = False
    rc_average: bool = False
    chunk_size: int = 1 << 14
    batch_size: int = 256
    rna: bool = False
    column: str | None = None
    windows: int = 0  # > 0: score windows of this many bp instead of whole records
    stride: int = 10
    strand: str = "both"  # the windows' strands ("both", "+", "-"); with rc_average, one averaged row

    def record(self) -> dict:
        """The options as run.json and the store keep them; without --windows, as before windows existed,
        so that an unfinished run of an earlier version still resumes."""
        options = asdict(self)
        if not self.windows:
            for key in ("windows", "stride", "strand"):
                del options[key]
        return options


@dataclass
class WindowRecord(FastaRecord):
    """One window of a record (`--windows`): its own tokens (reverse-complemented on the - strand) and N
    fraction, and where it lies on the record it came from; `had_iupac` is the record's (the IUPAC codes
    were read as N before the record was cut)."""

    seq_id: str
    start: int  # 0-based, on the + strand
    end: int  # exclusive
    strand: str  # "+", "-", or "." (both strands averaged)


def window_starts(length: int, width: int, stride: int) -> range | list[int]:
    """Where the width-bp windows of a length-bp record start: every `stride` bp, and one more ending at the
    record's end where the stride does not land there. A record no longer than `width` is one window; an
    empty record has none."""
    if length == 0:
        return []
    last = length - width
    if last <= 0:
        return [0]
    starts = range(0, last + 1, stride)
    return starts if starts[-1] == last else [*starts, last]


def windows_of(rec: FastaRecord, options: ScoreOptions):
    strands = (".",) if options.rc_average else STRANDS[options.strand]
    for start in window_starts(rec.length, options.windows, options.stride):
        end = min(rec.length, start + options.windows)
        piece = rec.tokens[start:end]
        n_share = n_fraction(piece)
        for strand in strands:
            tokens = reverse_complement(piece) if strand == "-" else piece
            where = f"{start + 1}-{end}" + ("" if strand == "." else f"({strand})")
            yield WindowRecord(rec.file, rec.index, f"{rec.id}:{where}", f"{rec.description} [{where}]", tokens,
                               n_share, rec.had_iupac, rec.id, start, end, strand)


def weights_hash(model_dir: str | Path) -> str:
    """sha256 of the bundle's config and weights: a model re-exported into the same folder is another model."""
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        path = Path(model_dir) / name
        if path.is_file():
            with open(path, "rb") as f:
                while block := f.read(1 << 22):
                    digest.update(block)
    return digest.hexdigest()


def check_paths(inputs: list[Path], out: str, tsv: str | None) -> tuple[Path, Path | None]:
    """Refuse, before any work, outputs that would overwrite an input or each other, or cannot be written."""
    if not out:
        raise SWAStreamError("--out: an empty path; give a folder name such as scores.zarr")
    out_path = Path(out)
    partial = out_path.with_name(out_path.name + ".partial")
    for p in inputs:
        if out_path.resolve() == p.resolve() or p.resolve().is_relative_to(out_path.resolve()):
            raise SWAStreamError(f"{out_path}: --out names an input (or a folder holding one); refusing")
    if out_path.exists() and not (partial / "complete").exists():
        kind = "is complete" if (out_path / "zarr.json").is_file() else "is not a score-fasta store"
        raise SWAStreamError(f"{out_path}: already exists and {kind}; remove it or choose another --out")
    probe_folder(out_path.parent, out_path)
    tsv_path = None
    if tsv is not None:
        looks = lambda p: first_line(p).startswith("\t".join(TSV_HEAD).encode())  # noqa: E731
        tsv_path = check_output_file(tsv, "--tsv", inputs, [out_path, partial], looks, "score-fasta TSV", stdout=True)
    return out_path, tsv_path


def _entry(rec: FastaRecord, number: int, probs: np.ndarray, track_row: int, means=None) -> dict:
    entry = {"n": number, "file": rec.file, "index": rec.index, "id": rec.id, "desc": rec.description,
             "len": rec.length, "nf": rec.n_fraction, "iupac": rec.had_iupac,
             "p": [round(float(p), 8) for p in probs], "h": rec.content_hash(), "t": track_row}
    if means is not None:  # a track model's per-record summary; None where every base is N
        entry["m"] = [None if np.isnan(m) else round(float(m), 8) for m in means]
    if isinstance(rec, WindowRecord):
        entry["w"] = [rec.seq_id, rec.start, rec.end, rec.strand]
    return entry


class _TrackSums:
    """Sums of a record's track probabilities over its non-N bases, strand by strand: the mean of the
    track as `--per-position` writes it (both strands averaged with --rc-average), without keeping it. A
    track model (no record classes) reports these means per record, in the TSV and records/track_mean."""

    def __init__(self, n_tracks: int, strands: int):
        self.sums, self.bases, self.strands = np.zeros(n_tracks), 0, strands

    def add(self, masked: np.ndarray, strand: int = 1) -> None:
        self.sums += np.nansum(masked, axis=0, dtype=np.float64)
        if strand == 1:
            self.bases += int(np.count_nonzero(~np.isnan(masked[:, 0]))) if masked.size else 0

    def means(self) -> np.ndarray:
        return self.sums / (self.strands * self.bases) if self.bases else np.full(len(self.sums), np.nan)

    @classmethod
    def of(cls, masked: np.ndarray) -> np.ndarray:
        """The means of one finished (strand-averaged) track."""
        sums = cls(masked.shape[1], 1)
        sums.add(masked)
        return sums.means()


def _score_long(model: DNAModel, number: int, rec: FastaRecord, options: ScoreOptions, log: RankLog) -> None:
    """A record longer than one chunk streams through step/flush; its track rows are written as they become
    final, and a track model's means are summed as they pass."""
    writer, row = None, -1
    sums = _TrackSums(len(model.tracks), 2 if options.rc_average else 1) if model.track_only else None
    if options.per_position:
        row = log.reserve(rec.length)
    if options.per_position or sums is not None:

        # Each strand writes from its own end: forward positions [0, reached[1]) and [reached[-1], length) are done
        reached = {1: 0, -1: rec.length}

        def writer(start: int, probs: np.ndarray, strand: int = 1) -> None:
            if strand == 1:
                lo = start
                masked = mask_n(probs, rec.tokens[lo : lo + len(probs)])
            else:  # reverse-strand position j is forward position length-1-j; NaN stays NaN
                lo = rec.length - start - len(probs)
                masked = mask_n(probs[::-1], rec.tokens[lo : lo + len(probs)])
            hi = lo + len(probs)
            if options.per_position:  # where the other strand wrote first, the mean of the two
                a, b = (max(lo, reached[-1]), hi) if strand == 1 else (lo, min(hi, reached[1]))
                rows = masked
                if a < b:
                    rows = masked.copy()
                    rows[a - lo : b - lo] = (log.read_rows(row + a, b - a) + masked[a - lo : b - lo]) / 2
                log.write_rows(row + lo, rows)
            reached[strand] = hi if strand == 1 else lo
            if sums is not None:
                sums.add(masked, strand)

    probs = score_record(model, rec.tokens, options.chunk_size, options.rc_average, writer)
    log.add(_entry(rec, number, probs, row, None if sums is None else sums.means()))
    log.commit()  # a long record is worth a commit of its own


def _score_batch(model: DNAModel, batch: list[tuple[int, FastaRecord]], options: ScoreOptions, log: RankLog,
                 wanted: set[int]) -> None:
    """Short records (together at most one chunk) run offline as one padded batch, which equals streaming
    them (padding is exact). Only the records in `wanted` are written: the others were logged by an
    earlier run, and are in the batch so that it has the same shape, and so the same bits, as then."""
    means = model.track_only
    strands = [[rec.tokens for _, rec in batch]]
    if options.rc_average:
        strands.append([reverse_complement(rec.tokens) for _, rec in batch])
    probs, tracks = [], []
    for seqs in strands:
        lengths = torch.tensor([len(t) for t in seqs])
        tokens = torch.full((len(seqs), max(1, int(lengths.max()))), N_TOKEN, dtype=torch.long)
        for i, t in enumerate(seqs):
            tokens[i, : len(t)] = torch.from_numpy(t.astype(np.int64))
        class_logits, track_logits = model(tokens.to(model.class_head.weight.device), lengths)
        probs.append(class_logits.float().softmax(-1).cpu().numpy())
        if options.per_position or means:
            tracks.append(torch.sigmoid(track_logits.float()).cpu().numpy())
    keep = [i for i, (number, _) in enumerate(batch) if number in wanted]
    rows = []
    if options.per_position or means:
        for i in keep:
            rec = batch[i][1]
            track = tracks[0][i, : rec.length]
            if options.rc_average:
                track = (track + tracks[1][i, : rec.length][::-1]) / 2
            rows.append(mask_n(track, rec.tokens))
    row = -1
    if rows and options.per_position:
        row = log.reserve(sum(len(r) for r in rows))
        log.write_rows(row, np.concatenate(rows))
    for j, i in enumerate(keep):
        number, rec = batch[i]
        summary = _TrackSums.of(rows[j]) if means else None
        log.add(_entry(rec, number, sum(p[i] for p in probs) / len(probs), row, summary))
        if options.per_position:
            row += rec.length


def _records(paths: list[Path], options: ScoreOptions, rank: int = 0, trained_on: int | None = None):
    """(number, record) in input order: the records, or with --windows their windows. A classifier that
    says what length it was trained on gets a note, once, for the first record over twice that length."""
    number, noted = 0, False
    quiet = (lambda message: None) if rank else (lambda message: print(message, file=sys.stderr))
    for path in paths:  # notices ("qualities are ignored") are said once, by rank 0
        for rec in read_sequences(path, rna=options.rna, column=options.column, notice=quiet):
            if options.windows:
                if not rec.length and not noted:
                    quiet(f"note: {rec.file} record {rec.index + 1} ({rec.id}) is empty: it has no windows, and "
                          "neither has any other empty record")
                    noted = True
                for window in windows_of(rec, options):
                    yield number, window
                    number += 1
                continue
            if trained_on and not noted and rec.length > 2 * trained_on:
                quiet(f"note: the model was trained on {trained_on} bp records, and {rec.file} record "
                      f"{rec.index + 1} ({rec.id}) is {rec.length:,} bp: it is scored whole; --windows "
                      f"{trained_on} scans it {trained_on} bp at a time")
                noted = True
            yield number, rec
            number += 1


def _prepare(run: RunFolder) -> str:
    """Rank 0: take the lock; complete an interrupted finalise ("done"), or check the manifest ("score")."""
    run.lock(0)
    if run.complete.exists():
        finish(run)
        return "done"
    run.check_manifest()
    return "score"


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
    broadcast=lambda value: value,
) -> dict:
    """Score every record of `inputs` into `out`; this process takes batches b with b % world_size == rank."""
    paths = check_inputs(inputs)
    streams = [p for p in paths if is_stream(p)]
    if streams and world_size > 1:
        raise SWAStreamError(f"{streams[0]}: a stream can be read only once, and each of the {world_size} processes "
                             "reads every input: save it to a file, or use --devices 1")
    out_path, tsv_path = check_paths(paths, out, tsv)
    manifest = {"inputs": [{"path": _input_name(p), "fingerprint": fingerprint(p)} for p in paths],
                "model": str(model_dir), "model_sha256": weights_hash(model_dir), "options": options.record()}
    run = RunFolder(out_path, manifest)
    status = "score"
    fresh = world_size == 1 and not run.partial.exists()  # this run makes the folder: see _score_or_clean
    if rank == 0:
        try:
            status = _prepare(run)
        except SWAStreamError as err:
            status = f"error:{err}"
        except OSError as err:
            status = f"error:{os_problem(getattr(err, 'filename', None) or run.partial, err)}"
        if status != "score":
            run.unlock()
    status = broadcast(status)
    if status.startswith("error:"):
        raise SWAStreamError(status[len("error:"):])
    summary = {"scored": 0, "skipped": 0, "bases": 0, "seconds": 0.0, "records": 0}
    if status == "done":
        if rank == 0:
            print(f"{out_path}: an earlier run had finished scoring; completed its last step", file=sys.stderr)
            summary["records"] = len(Store(out_path).ids)
        return summary
    try:
        if rank:
            run.lock(rank)
        summary.update(_score_or_clean(run, paths, model, options, rank, world_size, fresh))
        barrier()
        if rank == 0:
            summary["records"] = finalise(run, model, options, tsv_path, command, summary.pop("total"))
    except OSError as err:
        raise os_problem(getattr(err, "filename", None) or run.partial, err) from None
    finally:
        run.unlock()
    return summary


def _input_name(path: Path) -> str:
    """An input as run.json records it: its real path; standard input as "-" when it is a pipe, whose
    /proc name changes from run to run (a file redirected to it is that file)."""
    return "-" if path == STDIN_PATH and is_stream(path) else str(path.resolve())


class _Scorer:
    """One process's pass over the inputs: skip what is logged, batch short records, stream long ones."""

    def __init__(self, run: RunFolder, model: DNAModel, options: ScoreOptions, rank: int, world_size: int):
        self.run, self.model, self.options, self.rank, self.world_size = run, model, options, rank, world_size
        self.batches = 0
        self.finished = finished_records(run.partial)
        self.log = RankLog(run.partial, rank, len(model.tracks))
        self.skipped = self.scored = self.bases = self.total = 0
        self.started = time.perf_counter()
        self.bar = tqdm(desc="scoring", unit=" records", file=sys.stderr, disable=rank != 0 or None, mininterval=0.5)
        self.pending: list[tuple[int, FastaRecord]] = []
        self.widest = 0  # the longest pending record

    def flush(self) -> None:
        self.widest = 0
        self._flush()

    def _flush(self) -> None:
        """Score the pending batch if it is this process's and an earlier run did not log all of it. Every
        process cuts the same batches from every record, finished or not, and takes batches b with
        b % world_size == rank: so a resumed run, on any number of processes, scores the same batches
        with the same bits."""
        pending, options = self.pending, self.options
        mine, self.batches = self.batches % self.world_size == self.rank, self.batches + 1
        if not mine:
            pending.clear()
            return
        wanted = {number for number, _ in pending if number not in self.finished}
        self.skipped += len(pending) - len(wanted)
        if not wanted:
            pending.clear()
            return
        if len(pending) == 1 and pending[0][1].length > options.chunk_size:
            _score_long(self.model, *pending[0], options, self.log)
        else:
            _score_batch(self.model, pending, options, self.log, wanted)
        self.scored += len(wanted)
        self.bases += sum(rec.length for n, rec in pending if n in wanted) * (2 if options.rc_average else 1)
        self.bar.update(len(wanted))
        rate = self.bases / max(1e-9, time.perf_counter() - self.started) / 1e3
        self.bar.set_postfix_str(f"{rate:,.0f} kbp/s", refresh=False)
        pending.clear()

    def take(self, number: int, rec: FastaRecord) -> None:
        if number in self.finished and self.finished[number] != rec.content_hash():
            raise SWAStreamError(
                f"{rec.file}: record {rec.index + 1} ({rec.id}) is not the one the unfinished run in "
                f"{self.run.partial} scored; the input changed: remove that folder to start over")
        pending, options = self.pending, self.options
        widest = max(rec.length, self.widest)
        if pending and (len(pending) >= options.batch_size or (len(pending) + 1) * widest > options.chunk_size):
            self.flush()  # keep a padded batch within one chunk's worth of positions
            widest = rec.length
        pending.append((number, rec))
        self.widest = widest
        if rec.length > options.chunk_size:
            self.flush()


def _score_or_clean(run: RunFolder, paths, model, options, rank: int, world_size: int, fresh: bool) -> dict:
    """`_score_all`; a single-process run that made the partial folder itself and stops (a bad record, Ctrl-C)
    before it logged any record removes the folder again: there is no work in it to keep, and left behind it
    would refuse the next command on other inputs."""
    try:
        return _score_all(run, paths, model, options, rank, world_size)
    except BaseException:
        if fresh and next(all_entries(run.partial), None) is None:
            shutil.rmtree(run.partial, ignore_errors=True)
        raise


def _score_all(run: RunFolder, paths, model, options, rank: int, world_size: int) -> dict:
    scorer = _Scorer(run, model, options, rank, world_size)
    try:
        with torch.inference_mode():
            for number, rec in _records(paths, options, rank, None if model.track_only else model.record_length):
                scorer.total = number + 1
                scorer.take(number, rec)
            scorer.flush()
    finally:  # what was scored before an error or Ctrl-C is kept for the rerun
        scorer.log.close()
        scorer.bar.close()
    if scorer.skipped and rank == 0:
        print(f"skipped {scorer.skipped} records finished by an earlier run", file=sys.stderr)
    return {"scored": scorer.scored, "skipped": scorer.skipped, "bases": scorer.bases,
            "seconds": time.perf_counter() - scorer.started, "total": scorer.total}


def finalise(run: RunFolder, model: DNAModel, options: ScoreOptions, tsv: Path | None, command: str,
             total: int) -> int:
    attrs = {"swa_stream_version": __version__, "model": run.manifest["model"],
             "model_sha256": run.manifest["model_sha256"], "options": options.record(), "command": command}
    tracks = model.tracks if options.per_position else []
    means = model.tracks if model.track_only else []
    with atomic_text(tsv) if tsv is not None else contextlib.nullcontext() as f:
        if f is not None:
            f.write("\t".join(TSV_HEAD + [f"p_{c}" for c in model.classes] + [f"mean_{t}" for t in means]
                              + ["n_fraction"] + (WINDOW_HEAD if options.windows else [])) + "\n")
        records = build_store(run, total, model.classes, tracks, attrs, mean_tracks=means,
                              on_block=None if f is None else lambda entries: write_tsv_rows(f, entries, len(means)))
    mark_complete(run)
    finish(run)
    return records


def write_tsv_rows(f, entries: list[dict], n_means: int = 0) -> None:
    """One row per record; a track model's means are "nan" where every base is N (or the entry was logged
    by a swa-stream that kept none); a window's coordinates at the end."""
    def mean_cells(e):
        return ["nan" if m is None else f"{m:.6f}" for m in track_means(e, n_means)]

    f.writelines("\t".join([e["file"], str(e["index"]), e["id"], str(e["len"])] + [f"{p:.6f}" for p in e["p"]]
                           + mean_cells(e) + [f"{e['nf']:.4f}"] + [str(w) for w in e.get("w", ())]) + "\n"
                 for e in entries)


def run(args) -> None:
    from swa_stream.pipelines.allocator import keep_freed_memory
    from swa_stream.pipelines.bundles import load_dna_model
    from swa_stream.pipelines.bundles import model_dir as find_model

    for name in ("chunk_size", "batch_size", "devices", "num_nodes", "threads"):
        if getattr(args, name, 1) < 1:
            raise SWAStreamError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    options = ScoreOptions(args.per_position, args.rc_average, args.chunk_size, args.batch_size,
                           getattr(args, "rna", False), getattr(args, "column", None))
    model_dir = str(find_model(args.model, "dna"))
    model = load_dna_model(model_dir)
    options = window_options(options, args, model, model_dir)
    kwargs = dict(inputs=args.inputs, out=args.out, model_dir=model_dir, options=options, tsv=args.tsv,
                  command=shlex.join(["swa-stream", *args.argv]))
    threads, nodes = getattr(args, "threads", 1), getattr(args, "num_nodes", 1)
    keep_freed_memory()  # each step's tensors reuse the last step's pages (pipelines/allocator.py)
    if args.devices == 1 and nodes == 1:
        torch.set_num_threads(threads)
        summary = score(model=model, **kwargs)
    else:
        summary = _run_distributed(args.inputs, args.devices, nodes, threads, model, kwargs)
        if summary is None:
            return
    rate = summary["bases"] / max(summary["seconds"], 1e-9) / 1e3
    print(
        f"scored {summary['scored']} records ({summary['skipped']} skipped as already done) in "
        f"{summary['seconds']:.1f} s, {rate:,.0f} kbp/s; {summary['records']} records in {args.out}"
        + ("" if not args.tsv else " and on stdout" if is_stdout(args.tsv) else f" and {args.tsv}"),
        file=sys.stderr if is_stdout(args.tsv) else sys.stdout,
    )


def window_options(options: ScoreOptions, args, model: DNAModel, model_dir: str) -> ScoreOptions:
    """--windows, --stride and --strand checked against each other and the model."""
    windows, stride, strand = (getattr(args, name, None) for name in ("windows", "stride", "strand"))
    if windows is None:
        for flag, value in (("--stride", stride), ("--strand", strand)):
            if value is not None:
                raise SWAStreamError(f"{flag} applies to --windows W, which was not given")
        return options
    name = Path(model_dir).name
    if windows < 1:
        raise SWAStreamError(f"--windows must be >= 1 bp, got {windows}")
    if stride is not None and stride < 1:
        raise SWAStreamError(f"--stride must be >= 1 bp, got {stride}")
    if model.track_only:
        raise SWAStreamError(f"--windows: {name} has no record classes (a track model): --per-position already "
                             "scores every base of a record")
    if options.per_position:
        raise SWAStreamError("--windows and --per-position: a window's score is one row, not a track; "
                             "choose one")
    if strand is not None and options.rc_average:
        raise SWAStreamError("--strand and --rc-average: --rc-average gives each window one row, both strands "
                             "averaged; choose one")
    return replace(options, windows=windows, stride=stride or ScoreOptions.stride, strand=strand or "both")


def _run_distributed(inputs, devices: int, nodes: int, threads: int, model, kwargs) -> dict | None:
    """Lightning Fabric over `nodes` machines of `devices` processes: one process per device is started here
    on a single machine; across machines torchrun or SLURM starts them and Fabric reads their environment.
    The summary on rank 0, None elsewhere."""
    for path in check_inputs(inputs):  # refused here, before any process is started
        if is_stream(path):
            raise SWAStreamError(f"{path}: a stream can be read only once, and each of the {devices * nodes} "
                                 "processes reads every input: save it to a file first")
    from lightning.fabric import Fabric

    fabric = Fabric(accelerator="auto", devices=devices, num_nodes=nodes, strategy="ddp")
    fabric.launch()  # starts the other local processes, unless a launcher did; each takes batches b % N == rank
    if fabric.device.type == "cpu":
        torch.set_num_threads(max(1, min(threads, (os.cpu_count() or 1) // devices)))
    summary = score(model=model.to(fabric.device), rank=fabric.global_rank, world_size=fabric.world_size,
                    barrier=fabric.barrier, broadcast=lambda value: fabric.broadcast(value, src=0), **kwargs)
    return summary if fabric.global_rank == 0 else None
