"""The work-in-progress folder of a score-fasta run, and the finished store it becomes.

While running (O(1) files, whatever the number of records):

    OUT.zarr.partial/run.json         inputs (with content fingerprints), model (with a weights hash), options
    OUT.zarr.partial/lock.<rank>      held with an exclusive flock by the process scoring as <rank>
    OUT.zarr.partial/log.<rank>       append-only: one JSON line per finished record, fsynced per batch
    OUT.zarr.partial/tracks.<rank>    append-only float32 rows: the per-position tracks the log points into
    OUT.zarr.partial/complete         written once store.zarr and the TSV are whole (finalising may resume)
    OUT.zarr.partial/store.zarr/      built by finalise, then renamed to OUT.zarr

A record counts as done only once its log line, ending in a newline, is on disk; its track rows were
fsynced before that line was written. A line cut short by kill -9 is ignored and cut off on the next run,
and so are track rows no line points to. The log records each record's content hash, so a resumed run
refuses an input whose records changed, even when it is a stream with no fingerprint.

Finished store (zarr v3, layout 2): `records/*` one array per field, `tracks` one ragged (positions,
n_tracks) float32 array in input order with `records/track_offset` (n + 1) its index; N positions are NaN.
Layout 1 (one `tracks/<n>` array per record) is still read by `open_store`.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import zarr

from swa_stream.errors import SWAStreamError
from swa_stream.pipelines.safe_output import os_problem

LAYOUT = 2
TRACK_SHARD = 1 << 22  # rows per shard file of the ragged track array
TRACK_CHUNK = 1 << 16  # rows per chunk inside a shard
COMMIT_RECORDS, COMMIT_SECONDS = 4096, 2.0


class RankLog:
    """One process's append-only log and track file. Rows of `tracks.<rank>` are (n_tracks,) float32."""

    def __init__(self, partial: Path, rank: int, n_tracks: int):
        self.log_path, self.track_path = partial / f"log.{rank}", partial / f"tracks.{rank}"
        self.row_bytes = 4 * n_tracks
        good, end_row = read_log(self.log_path, rank)[1:]
        self.log = open(self.log_path, "ab")
        self.log.truncate(good)  # a line cut short by a kill
        self.tracks = os.open(self.track_path, os.O_RDWR | os.O_CREAT, 0o644)
        os.truncate(self.tracks, end_row * self.row_bytes)  # rows no finished line points to
        self.end_row = end_row
        self.pending: list[bytes] = []
        self.last_commit = time.monotonic()

    def reserve(self, rows: int) -> int:
        start, self.end_row = self.end_row, self.end_row + rows
        return start

    def write_rows(self, row: int, values: np.ndarray) -> None:
        data = np.ascontiguousarray(values, dtype=np.float32).tobytes()
        view, offset = memoryview(data), row * self.row_bytes
        while view:
            written = os.pwrite(self.tracks, view, offset)
            view, offset = view[written:], offset + written

    def read_rows(self, row: int, count: int) -> np.ndarray:
        data = os.pread(self.tracks, count * self.row_bytes, row * self.row_bytes)
        return np.frombuffer(data, dtype=np.float32).reshape(count, -1).copy()

    def add(self, entry: dict) -> None:
        self.pending.append(json.dumps(entry, separators=(",", ":")).encode() + b"\n")
        if len(self.pending) >= COMMIT_RECORDS or time.monotonic() - self.last_commit >= COMMIT_SECONDS:
            self.commit()

    def commit(self) -> None:
        """Track rows to disk first, then the lines that point at them: a crash never leaves a line without rows."""
        if not self.pending:
            return
        os.fsync(self.tracks)
        self.log.write(b"".join(self.pending))
        self.log.flush()
        os.fsync(self.log.fileno())
        self.pending.clear()
        self.last_commit = time.monotonic()

    def close(self) -> None:
        """Commit what is pending, and close both files even when that commit fails (a full disk): an open
        file would hold the disk busy for the rest of a process that goes on (a server, a test run)."""
        try:
            self.commit()
        finally:
            try:
                self.log.close()  # may raise too (its buffer cannot be flushed); the track file closes anyway
            finally:
                os.close(self.tracks)


def _scan(path: Path) -> Iterator[tuple[int, int, dict]]:
    """(byte offset, line length, entry) of each whole line of a log; stops at a line cut short by a kill."""
    offset = 0
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break
            try:
                entry = json.loads(line)
            except ValueError:
                break
            yield offset, len(line), entry
            offset += len(line)


def read_log(path: Path, rank: int) -> tuple[list[dict], int, int]:
    """(entries, bytes of whole lines, track rows in use) of one rank's log; a cut-short last line is dropped."""
    if not path.exists():
        return [], 0, 0
    entries, good, end_row = [], 0, 0
    for offset, size, entry in _scan(path):
        entry["rank"] = rank
        entries.append(entry)
        good = offset + size
        if entry["t"] >= 0:
            end_row = max(end_row, entry["t"] + entry["len"])
    return entries, good, end_row


def all_entries(partial: Path) -> Iterator[dict]:
    for path in sorted(partial.glob("log.*")):
        yield from read_log(path, int(path.suffix[1:]))[0]


class LogIndex:
    """Where every logged record is, as a few numbers each (not its whole entry), sorted by record number:
    finalising a million records reads their entries back a block at a time from the logs."""

    def __init__(self, partial: Path):
        cols = {k: array.array("q") for k in ("n", "rank", "offset", "t", "len")}  # 8 bytes a number
        self.paths: dict[int, Path] = {}
        for path in sorted(partial.glob("log.*")):
            rank = int(path.suffix[1:])
            self.paths[rank] = path
            for offset, _, entry in _scan(path):
                for key, value in (("n", entry["n"]), ("rank", rank), ("offset", offset), ("t", entry["t"]),
                                   ("len", entry["len"])):
                    cols[key].append(value)
        order = np.argsort(np.frombuffer(cols["n"], dtype=np.int64), kind="stable")
        for key, values in cols.items():
            setattr(self, key, np.frombuffer(values, dtype=np.int64)[order])

    def __len__(self) -> int:
        return len(self.n)

    def entries(self, lo: int, hi: int) -> list[dict]:
        """The entries of index positions lo..hi-1, in record order, each with its rank."""
        out: list[dict | None] = [None] * (hi - lo)
        with contextlib.ExitStack() as stack:
            files = {r: stack.enter_context(open(p, "rb")) for r, p in self.paths.items()}
            for k in sorted(range(lo, hi), key=lambda k: (self.rank[k], self.offset[k])):  # sequential reads
                f = files[int(self.rank[k])]
                f.seek(int(self.offset[k]))
                entry = json.loads(f.readline())
                entry["rank"] = int(self.rank[k])
                out[k - lo] = entry
        return out


class RunFolder:
    def __init__(self, out: Path, manifest: dict):
        self.out, self.partial = out, out.with_name(out.name + ".partial")
        self.store_path, self.complete = self.partial / "store.zarr", self.partial / "complete"
        self.manifest = manifest
        self._lock_fd: int | None = None

    def lock(self, rank: int) -> None:
        """An exclusive flock in the partial folder, so two runs on one --out never write together."""
        for _ in range(3):
            try:
                self.partial.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.partial / f"lock.{rank}", os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise os_problem(self.partial, err) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise SWAStreamError(f"{self.partial}: another score-fasta run is writing this --out now; "
                                     "wait for it to finish, or stop it first") from None
            if self.partial.exists():  # the holder may have finished and removed the folder meanwhile
                self._lock_fd = fd
                return
            os.close(fd)
        raise SWAStreamError(f"{self.partial}: the folder keeps vanishing; is another run finishing it?")

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def check_manifest(self) -> None:
        """Write run.json, or check that the unfinished run in the folder had the same inputs, weights and options."""
        run_json = self.partial / "run.json"
        if any(self.partial.glob("done")):
            raise SWAStreamError(f"{self.partial}: an unfinished run of an older swa-stream (one file per record); "
                                 "remove the folder to start over")
        if not run_json.is_file():
            tmp = run_json.with_name(".run.json.tmp")
            try:
                tmp.write_text(json.dumps(self.manifest, indent=2))
                os.replace(tmp, run_json)
            except OSError as err:
                raise os_problem(run_json, err) from None
            return
        previous = json.loads(run_json.read_text())
        for what, key in (("model weights", "model_sha256"), ("options", "options"), ("inputs", "inputs")):
            if previous.get(key) != self.manifest[key]:
                detail = _difference(previous.get(key), self.manifest[key]) if key == "inputs" else ""
                raise SWAStreamError(
                    f"{self.partial}: an unfinished run with other {what}{detail}; its scores would mix with these, "
                    "so nothing was scored: rerun that command, or remove the folder to start over"
                )


def _difference(before, now) -> str:
    before = before or []
    if [b["path"] for b in before] != [n["path"] for n in now]:
        return f" ({', '.join(b['path'] for b in before)})"
    changed = [n["path"] for b, n in zip(before, now, strict=True) if b["fingerprint"] != n["fingerprint"]]
    return f" ({', '.join(changed)} changed since)"


def track_means(entry: dict, n_tracks: int) -> list[float | None]:
    """A logged record's track means (None: every base N); all None for an entry logged by a swa-stream
    that kept none."""
    return entry.get("m") or [None] * n_tracks


def finished_records(partial: Path) -> dict[int, str]:
    """number -> content hash of every record a previous run logged."""
    return {e["n"]: e["h"] for e in all_entries(partial)}


COLUMNS = (("file", "file", str), ("record_index", "index", "int64"), ("id", "id", str),
           ("description", "desc", str), ("length", "len", "int64"), ("n_fraction", "nf", "float32"),
           ("had_iupac", "iupac", "bool"))


BLOCK_RECORDS = 1 << 16  # records finalised at a time (and the chunk of every records/* array)
READ_RECORDS = 4096  # log entries parsed at a time (each is a dict of about 1 KB)


def build_store(run: RunFolder, total: int, classes: list[str], tracks: list[str], attrs: dict,
                on_block: Callable[[list[dict]], None] | None = None, mean_tracks: list[str] = ()) -> int:
    """Build store.zarr from the logs, records in input order, a block of BLOCK_RECORDS at a time, read
    READ_RECORDS entries at a time; each read's entries also go to `on_block` (the TSV). Returns the
    number of records. zarr encodes in one worker thread: each of its default pool's threads would get a
    malloc arena of its own (about 120 MB more resident memory, measured), for chunks too small to gain."""
    with zarr.config.set({"threading.max_workers": 1}):
        return _build_store(run, total, classes, tracks, attrs, on_block, list(mean_tracks))


def _build_store(run, total, classes, tracks, attrs, on_block, mean_tracks) -> int:
    index = LogIndex(run.partial)
    if not np.array_equal(index.n, np.arange(total)):
        beyond = int((index.n >= total).sum())
        if beyond:  # the logs hold records that this input does not reach: it is shorter than the first run's
            raise SWAStreamError(
                f"{run.partial}: holds {beyond} finished record(s) beyond this input's {total} record(s): the "
                f"input ended earlier than in the run being resumed; give the whole input again, or remove "
                f"{run.partial} to start over")
        raise SWAStreamError(f"{run.partial}: some records are not finished; rerun the same command")
    if run.store_path.exists():
        shutil.rmtree(run.store_path)  # an earlier finalise that did not complete
    group = zarr.open_group(run.store_path, mode="w")
    n, chunk = len(index), max(1, min(len(index), BLOCK_RECORDS))
    arrays = {name: group.create_array(f"records/{name}", shape=(n,), chunks=(chunk,), dtype=dtype)
              for name, _, dtype in COLUMNS + (("empty", None, "bool"),)}
    probs = group.create_array("records/probs", shape=(n, len(classes)), chunks=(chunk, len(classes)),
                               dtype="float32")
    means = None
    if mean_tracks:  # a track model's per-record means (NaN: every base N)
        means = group.create_array("records/track_mean", shape=(n, len(mean_tracks)),
                                   chunks=(chunk, len(mean_tracks)), dtype="float32")
    files: dict[str, str] = {}  # one string object per input file name, not one per record
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        columns: dict[str, list] = {name: [] for name, _, _ in COLUMNS}
        p_rows, m_rows = [], []
        for sub in range(lo, hi, READ_RECORDS):  # parsed entries are large: a few thousand at a time
            entries = index.entries(sub, min(hi, sub + READ_RECORDS))
            for e in entries:
                e["file"] = files.setdefault(e["file"], e["file"])
            for name, key, _ in COLUMNS:
                columns[name].extend(e[key] for e in entries)
            p_rows.append(np.asarray([e["p"] for e in entries], dtype=np.float32).reshape(len(entries), len(classes)))
            if means is not None:
                m_rows.append(np.asarray([[np.nan if m is None else m for m in track_means(e, len(mean_tracks))]
                                          for e in entries], dtype=np.float32).reshape(len(entries), len(mean_tracks)))
            if on_block is not None:
                on_block(entries)
            del entries
        for name, _, dtype in COLUMNS:
            arrays[name][lo:hi] = np.asarray(columns[name], dtype=None if dtype is str else dtype)
        arrays["empty"][lo:hi] = np.asarray(columns["length"], dtype=np.int64) == 0
        probs[lo:hi] = np.concatenate(p_rows)
        if means is not None:
            means[lo:hi] = np.concatenate(m_rows)
    if tracks:
        _copy_tracks(run, group, index, len(tracks))
    group.attrs.update({**attrs, "layout": LAYOUT, "classes": classes, "tracks": tracks})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "consolidated metadata is not part of the v3 spec" is known
        zarr.consolidate_metadata(run.store_path)
    return n


def _copy_tracks(run: RunFolder, group, index: LogIndex, n_tracks: int) -> None:
    """Concatenate each record's rows, in input order, into one sharded array, a shard at a time."""
    offsets = np.zeros(len(index) + 1, dtype=np.int64)
    np.cumsum(index.len, out=offsets[1:])
    total = int(offsets[-1])
    arr = group.create_array("tracks", shape=(total, n_tracks), dtype="float32", fill_value=np.nan,
                             chunks=(max(1, min(total, TRACK_CHUNK)), n_tracks),
                             shards=(max(1, min(total, TRACK_CHUNK) * (TRACK_SHARD // TRACK_CHUNK)), n_tracks))
    offsets_array = group.create_array("records/track_offset", shape=(len(offsets),), chunks=(len(offsets),),
                                       dtype="int64")
    offsets_array[:] = offsets
    row_bytes = 4 * n_tracks
    with contextlib.ExitStack() as stack:
        # read into the buffer, not through a memory map: mapped pages of a large track file would count
        # in the process's resident memory
        sources = {rank: stack.enter_context(open(run.partial / f"tracks.{rank}", "rb", buffering=0))
                   for rank in np.unique(index.rank).tolist()}
        shard = arr.shards[0]
        buffer, filled, written = np.empty((min(shard, max(1, total)), n_tracks), np.float32), 0, 0
        raw = memoryview(buffer).cast("B")
        for rank, row, left in zip(index.rank.tolist(), index.t.tolist(), index.len.tolist(), strict=True):
            while left:
                take = min(left, len(buffer) - filled)
                want = raw[filled * row_bytes : (filled + take) * row_bytes]
                if os.preadv(sources[rank].fileno(), [want], row * row_bytes) != len(want):
                    raise SWAStreamError(f"{run.partial}/tracks.{rank}: shorter than its log says; the run "
                                         "folder is damaged: remove it to start over")
                filled, row, left = filled + take, row + take, left - take
                if filled == len(buffer):
                    arr[written : written + filled] = buffer
                    written, filled = written + filled, 0
        if filled:
            arr[written : written + filled] = buffer[:filled]


def finish(run: RunFolder) -> None:
    """The last, idempotent steps: a crash anywhere here is completed by the next run of the command."""
    if run.store_path.exists():
        if run.out.exists():
            raise SWAStreamError(f"{run.out}: exists, but {run.store_path} is the finished store; "
                                 "move one of them away")
        os.replace(run.store_path, run.out)
    # The marker goes last: a crash while the rest is removed leaves it, and the next run comes back here.
    if run.partial.is_dir():
        for child in run.partial.iterdir():
            if child != run.complete:
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    run.complete.unlink(missing_ok=True)
    shutil.rmtree(run.partial, ignore_errors=True)


def mark_complete(run: RunFolder) -> None:
    with open(run.complete, "w") as f:
        f.write("store.zarr and the TSV are complete\n")
        f.flush()
        os.fsync(f.fileno())


# ---- reading -------------------------------------------------------------------------------------
class Store:
    """A finished store, either layout. `blocks(column)` reads tracks sequentially, in bounded pieces."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.group = zarr.open_group(self.path, mode="r")
            self.ids = [str(x) for x in self.group["records/id"][:]]
            self.lengths = self.group["records/length"][:].astype(np.int64)
        except (FileNotFoundError, KeyError, ValueError, OSError):
            raise SWAStreamError(f"{self.path}: not a finished score-fasta store") from None
        self.tracks = list(self.group.attrs.get("tracks", []))
        self.layout = int(self.group.attrs.get("layout", 1))
        if self.layout > LAYOUT:
            raise SWAStreamError(f"{self.path}: store layout {self.layout} is newer than this swa-stream reads")

    def blocks(self, column: int, rows: int = 1 << 20) -> Iterator[tuple[int, int, np.ndarray]]:
        """(record number, start position, values) pieces covering every record's track in order."""
        if self.layout == 1:
            yield from self._blocks_v1(column, rows)
            return
        try:
            arr, offsets = self.group["tracks"], self.group["records/track_offset"][:]
        except KeyError:
            raise SWAStreamError(f"{self.path}: the tracks array or its index is missing; "
                                 "the store is damaged") from None
        if len(offsets) != len(self.ids) + 1 or not np.array_equal(np.diff(offsets), self.lengths) \
                or offsets[-1] != arr.shape[0]:
            raise SWAStreamError(f"{self.path}: the track index does not match the records; the store is damaged")
        n, lo = 0, 0
        while n < len(self.ids) and self.lengths[n] == 0:
            n += 1
        total = int(offsets[-1])
        while lo < total:
            values = arr[lo : min(total, lo + rows), column]
            at = 0
            while at < len(values):
                while offsets[n + 1] <= lo + at:
                    n += 1
                take = min(len(values) - at, int(offsets[n + 1]) - (lo + at))
                yield n, lo + at - int(offsets[n]), values[at : at + take]
                at += take
            lo += len(values)

    def _blocks_v1(self, column: int, rows: int):
        for n, length in enumerate(self.lengths):
            try:
                arr = self.group[f"tracks/{n}"]
            except KeyError:
                raise SWAStreamError(f"{self.path}: record {n + 1} ({self.ids[n]}) has no track; "
                                     "the store is incomplete or damaged") from None
            if arr.shape[0] != length:
                raise SWAStreamError(f"{self.path}: record {n + 1} ({self.ids[n]}): track of {arr.shape[0]} "
                                     f"positions for {length} bases; the store is damaged")
            for lo in range(0, int(length), rows):
                yield n, lo, arr[lo : lo + rows, column]

    def track(self, n: int) -> np.ndarray:
        """Record n's whole (length, n_tracks) track: for tests and small records."""
        if self.layout == 1:
            return self.group[f"tracks/{n}"][:]
        offsets = self.group["records/track_offset"]
        lo, hi = int(offsets[n]), int(offsets[n + 1])
        return self.group["tracks"][lo:hi]
