"""The DNA model: nucleotide embedding -> SWAEncoder -> a per-position head and a sequence-level head.

The sequence head pools a projection of the encoder output over the record two ways, by maximum
(presence of a pattern anywhere) and by mean (how much of the record shows it; its gradient reaches
every position, which makes training start faster). Both are O(1) running state: the maximum is exact
under any chunking, and the mean is a float64 running sum divided at the end, so a chromosome streams
through `step`/`flush` with the class scores of `forward` on the whole record.
No Lightning here: inference does not pay for it.
"""

from __future__ import annotations

import contextlib
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from swa_stream.config import SWAConfig
from swa_stream.encoder import SWAEncoder
from swa_stream.errors import SWAStreamError
from swa_stream.lengths import length_mask, zero_past
from swa_stream.ragged import RowsMixin, as_counts, emit, positions, ragged_cat, take, valid_mask
from swa_stream.state import StreamState
from swa_stream.tasks.dna.schema import DEFAULT_STEM_KERNEL, DEFAULT_TRACK  # noqa: F401 - the defaults, defined once there
from swa_stream.tasks.dna.tokenizer import ALPHABET, reverse_complement


@dataclass
class StemState:
    held: torch.Tensor  # (B, kernel - 1, d) the newest inputs, left-aligned; `count` (B,) of them are valid
    count: torch.Tensor


class ConvStem(nn.Module):
    """x + GELU(centred Conv1d(x)) over (B, T, d): a short-range motif detector in front of attention,
    which on its own learns a 10 bp motif very slowly. The kernel is centred (k // 2 positions each side),
    so streaming holds back k // 2 positions and carries the newest k - 1 inputs; the end of a stream is
    padded with zeros exactly as offline pads the end of a sequence."""

    def __init__(self, d_model: int, kernel: int):
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"stem_kernel: must be odd and >= 1, got {kernel}")
        self.kernel, self.half = kernel, kernel // 2
        self.conv = nn.Conv1d(d_model, d_model, kernel)

    def _valid(self, buf: torch.Tensor) -> torch.Tensor:
        """Outputs for every full window of buf (B, n, d): (B, n - k + 1, d), centred on buf[k//2 ..]."""
        if buf.shape[1] < self.kernel:
            return buf[:, :0]
        # As a 2-D convolution over (B, d, 1, n), buf's (B, n, d) memory is channels-last, which oneDNN reads
        # in place: Conv1d on the transposed view copied it first (2 x 16,392 positions: 43 -> 18 ms). It reads
        # self.conv's tensors directly, so hooks or parametrisations on self.conv would not apply.
        y = F.conv2d(buf.transpose(1, 2)[:, :, None], self.conv.weight[:, :, None], self.conv.bias)
        return buf[:, self.half : buf.shape[1] - self.half] + F.gelu(y[:, :, 0].transpose(1, 2))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is not None:  # positions past a length must look like the zero padding of a stream's end
            x = zero_past(x, lengths)
        return self._valid(F.pad(x, (0, 0, self.half, self.half)))

    def init_state(self, batch_size: int, device=None, dtype=None) -> StemState:
        held = torch.zeros(batch_size, self.kernel - 1, self.conv.in_channels, device=device, dtype=dtype)
        return StemState(held, positions(self.half, batch_size))  # the offline left padding: k // 2 zeros

    def step(self, x: torch.Tensor, state: StemState, counts: list[int]):
        """x (B, t, d), row b's first counts[b] valid -> (outputs, per-row counts, state)."""
        held = state.count.tolist()
        buf = ragged_cat(state.held, held, x)
        total = [h + c for h, c in zip(held, counts, strict=True)]
        outs = [max(0, n - self.kernel + 1) for n in total]
        y = self._valid(buf)[:, : max(outs, default=0)]
        kept = [min(n, self.kernel - 1) for n in total]
        rest = take(buf, [n - k for n, k in zip(total, kept, strict=True)], self.kernel - 1).clone()
        return y, outs, StemState(rest, positions(kept, len(kept)))

    def flush(self, state: StemState) -> tuple[torch.Tensor, list[int]]:
        batch = state.held.shape[0]
        tail = state.held.new_zeros(batch, self.half, state.held.shape[2])
        y, counts, _ = self.step(tail, state, [self.half] * batch)
        return y, counts


@dataclass
class DNAState(RowsMixin):
    """A batch of records, one per row (`select` / `cat` take or join rows between steps)."""

    _ragged_fields = ("bypass",)
    stem: StemState | None
    encoder: StreamState
    pooled: torch.Tensor  # (B, d_model) running max of the pooled projection; -inf before any position
    total: torch.Tensor  # (B, d_model) float64 running sum of the pooled projection
    seen: torch.Tensor  # (B,) int64 positions emitted so far
    fed: torch.Tensor  # (B,) int64 tokens received so far (where the next one sits in its record)


class DNAModel(nn.Module):
    """tokens (B, T) in 0..4 -> (class logits (B, n_classes), track logits (B, T, n_tracks)).
    A track-only model has no classes: its class logits are (B, 0). `record_length`: the one length of the
    records a classifier was trained on, if they had one (score-fasta's note on longer records names it).
    `absolute_positions` (needs `record_length`): a learned vector per position of the record is added to
    each base's embedding, so a classifier of aligned windows (a splice junction at base 30) can tell where
    in the window a pattern lies; the max/mean pooling alone cannot. Bases past `record_length` get the
    last position's vector. It streams exactly: the state counts the bases each row has received."""

    def __init__(
        self, encoder: SWAConfig, classes: list[str], tracks: list[str] | None = None, stem_kernel: int = 0,
        record_length: int | None = None, absolute_positions: bool = False,
    ):
        super().__init__()
        self.record_length = record_length
        if absolute_positions and record_length is None:
            raise ValueError("absolute_positions: needs record_length, the one length of the records")
        if len(classes) == 1:  # none is a track-only model; one class would be no classification at all
            raise ValueError(f"classes: need two or more class names, or none (track only), got {classes!r}")
        self.classes, self.tracks = list(classes), list(tracks or [DEFAULT_TRACK])
        d = encoder.d_model
        self.embed = nn.Embedding(len(ALPHABET), d)
        self.positions = nn.Embedding(record_length, d) if absolute_positions else None
        self.stem = ConvStem(d, stem_kernel) if stem_kernel else None
        self.encoder = SWAEncoder(encoder)
        self.track_head = nn.Linear(d, len(self.tracks))
        self.pool_proj = nn.Linear(d, d)
        with warnings.catch_warnings():  # a track-only model's class head has no rows, which torch warns about
            warnings.simplefilter("ignore", UserWarning)
            self.class_head = nn.Linear(2 * d, len(self.classes))

    @property
    def track_only(self) -> bool:
        """No record classes: the model answers with its per-position tracks (bacteria-genes)."""
        return not self.classes

    @property
    def cfg(self) -> SWAConfig:
        return self.encoder.cfg

    def _pool_features(self, h: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.pool_proj(h))

    def _classify(self, maximum: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        # A record with no positions has nothing to pool: it gets the scores of an all-zero summary.
        maximum = torch.where(torch.isinf(maximum), torch.zeros_like(maximum), maximum)
        return self.class_head(torch.cat([maximum, mean.to(maximum.dtype)], dim=-1))

    @property
    def absolute_positions(self) -> bool:
        return self.positions is not None

    def _embed(self, tokens: torch.Tensor, first: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, t) -> (B, t, d); with absolute positions, column j of row b is base first[b] + j."""
        x = self.embed(tokens)
        if self.positions is None:
            return x
        where = torch.arange(tokens.shape[1], device=tokens.device)[None]
        if first is not None:
            where = where + first.to(tokens.device)[:, None]
        return x + self.positions(where.clamp(max=self.record_length - 1))

    def encode(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, T) -> encoder output (B, T, d_model), offline."""
        x = self._embed(tokens)
        if self.stem is not None:
            x = self.stem(x, lengths)
        return self.encoder(x, lengths)

    def receptive_field(self) -> tuple[int, int]:
        """(left, right) bases reaching each output: the stem's half width plus the encoder's field."""
        left, right = self.encoder.receptive_field()
        half = 0 if self.stem is None else self.stem.half
        return left + half, right + half

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None):
        h = self.encode(tokens, lengths)
        features = self._pool_features(h)
        batch, length = tokens.shape
        lengths = torch.full((batch,), length, device=tokens.device) if lengths is None else lengths.to(tokens.device)
        valid = length_mask(lengths, length)[..., None]
        if length:
            maximum = features.masked_fill(~valid, float("-inf")).amax(dim=1)
        else:
            maximum = features.new_full((batch, features.shape[-1]), float("-inf"))
        mean = (features * valid).sum(dim=1) / lengths.clamp(min=1)[:, None]
        return self._classify(maximum, mean), self.track_head(h)

    # ---- streaming -----------------------------------------------------------------------------
    def init_state(self, batch_size: int, start_position=0) -> DNAState:
        ref = self.class_head.weight
        pooled = torch.full((batch_size, self.cfg.d_model), float("-inf"), device=ref.device, dtype=ref.dtype)
        total = torch.zeros((batch_size, self.cfg.d_model), device=ref.device, dtype=torch.float64)
        stem = None if self.stem is None else self.stem.init_state(batch_size, ref.device, ref.dtype)
        seen, fed = torch.zeros(batch_size, dtype=torch.int64), torch.zeros(batch_size, dtype=torch.int64)
        return DNAState(stem, self.encoder.init_state(batch_size, start_position), pooled, total, seen, fed)

    def _absorb(self, h: torch.Tensor, lengths: torch.Tensor, state: DNAState, stem_state, encoder_state):
        """Fold h (B, t, d), row b's first lengths[b] valid, into the running max and sum."""
        pooled, total = state.pooled, state.total
        if h.shape[1]:
            features = self._pool_features(h)
            valid = valid_mask(lengths.tolist(), h.shape[1], h.device)[..., None]
            pooled = torch.maximum(pooled, features.masked_fill(~valid, float("-inf")).amax(dim=1))
            total = total + (features * valid).sum(dim=1, dtype=torch.float64)
        return self.track_head(h), DNAState(stem_state, encoder_state, pooled, total, state.seen + lengths, state.fed)

    def step(self, tokens: torch.Tensor, state: DNAState, counts=None):
        """tokens (B, t) -> (track logits (B, t', n_tracks) of the positions that became final, next state).
        With counts (B,) (row b's first counts[b] tokens are valid, 0 allowed): (track logits, lengths (B,),
        state); row b's first lengths[b] rows are its new positions."""
        counted = as_counts(counts, *tokens.shape)
        x, stem_state = self._embed(tokens, state.fed), state.stem
        state = replace(state, fed=state.fed + torch.tensor(counted, dtype=torch.int64))
        if self.stem is not None:
            x, counted, stem_state = self.stem.step(x, state.stem, counted)
        h, lengths, encoder_state = self.encoder.step(x, state.encoder, counts=counted)
        tracks, state = self._absorb(h, lengths, state, stem_state, encoder_state)
        return emit(tracks, lengths.tolist(), state, counts is not None)

    def flush(self, state: DNAState, with_lengths: bool = False):
        """End of record -> (track logits of the held-back tail, class logits (B, n_classes) of the whole
        record); with `with_lengths`: (track logits, lengths (B,), class logits), for rows at different
        points of their records."""
        encoder_state, parts = state.encoder, []
        if self.stem is not None:  # the stem's held-back positions go through the encoder first
            x, counts = self.stem.flush(state.stem)
            h, lengths, encoder_state = self.encoder.step(x, encoder_state, counts=counts)
            tracks, state = self._absorb(h, lengths, state, None, encoder_state)
            parts.append((tracks, lengths))
        h, lengths = self.encoder.flush(encoder_state, with_lengths=True)
        tracks, state = self._absorb(h, lengths, state, None, encoder_state)
        if parts:
            tracks, lengths = ragged_cat(parts[0][0], parts[0][1].tolist(), tracks), parts[0][1] + lengths
            tracks = tracks[:, : int(lengths.max()) if len(lengths) else 0]
        tracks, lengths, _ = emit(tracks, lengths.tolist(), None, True)
        classes = self._classify(state.pooled, state.total / state.seen.clamp(min=1).to(state.total)[:, None])
        if with_lengths:
            return tracks, lengths, classes
        if len(set(lengths.tolist())) > 1:
            raise SWAStreamError("flush: the rows are at different points of their records; pass with_lengths=True")
        return tracks, classes


@torch.no_grad()
def stream_rows(model: DNAModel, rows: list[np.ndarray], chunk_size: int, on_tracks=None, on_chunk=None
                ) -> torch.Tensor:
    """Stream equal-length records (uint8 tokens) as the rows of one stream through `model`, chunk_size
    positions of each a step; return their class probabilities (B, n_classes). `on_tracks(start, probs)`
    receives per-position track probabilities (B, n, n_tracks) for positions start.. as they become final, in
    order; `on_chunk(n)` hears of each n positions fed.

    On the CPU with at least as many torch threads as rows, each row is a stream of its own, stepped on its
    own Python thread with its share of torch's threads (`_row_workers`): two strands on two threads, each
    single-threaded, take 0.74-0.84 of the time of one two-row step on both threads (`benchmarks/dna_step.py
    --split`), since small ops split between threads pay for the split and are memory-bound anyway. The
    deliveries are the same, in the same order."""
    device = model.class_head.weight.device
    workers = len(rows) if device.type == "cpu" and 1 < len(rows) <= torch.get_num_threads() else 1
    emitted = 0

    def deliver(track_logits: torch.Tensor) -> None:
        nonlocal emitted
        if on_tracks is not None and track_logits.shape[1]:
            on_tracks(emitted, torch.sigmoid(track_logits).float().cpu().numpy())
        emitted += track_logits.shape[1]

    with _row_workers(workers) as each:
        states = each(lambda r: model.init_state(batch_size=len(r)), _split(rows, workers))
        for start in range(0, len(rows[0]), chunk_size):
            chunk = np.stack([row[start : start + chunk_size] for row in rows]).astype(np.int64)  # widened per chunk
            pieces = _split(torch.from_numpy(chunk).to(device), workers)
            stepped = each(model.step, pieces, states)
            states = [state for _, state in stepped]
            deliver(torch.cat([logits for logits, _ in stepped]))
            if on_chunk is not None:
                on_chunk(chunk.shape[1])
        flushed = each(model.flush, states)
    deliver(torch.cat([tracks for tracks, _ in flushed]))
    return torch.softmax(torch.cat([classes for _, classes in flushed]).float(), dim=-1).cpu()


def _split(rows, workers: int) -> list:
    """rows (a list of arrays, or a tensor's first dimension) as one part, or, for one worker per row, one
    part per row, in order."""
    return [rows] if workers == 1 else [rows[i : i + 1] for i in range(len(rows))]


@contextlib.contextmanager
def _row_workers(workers: int):
    """`each(fn, *lists)`: [fn(*args) for args in zip(*lists)], the calls on `workers` threads at once (the
    first on this one), each with torch's threads divided between them and this thread's grad and
    inference modes (both are per thread in torch). One worker calls fn here, as a plain loop would."""
    if workers == 1:
        yield lambda fn, *lists: [fn(*args) for args in zip(*lists, strict=True)]
        return
    threads, grad, inference = torch.get_num_threads(), torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def call(fn, args):
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return fn(*args)

    torch.set_num_threads(max(1, threads // workers))
    try:
        with ThreadPoolExecutor(workers - 1, thread_name_prefix="swa-rows") as pool:
            def each(fn, *lists):
                calls = list(zip(*lists, strict=True))
                later = [pool.submit(call, fn, args) for args in calls[1:]]
                return [fn(*calls[0]), *(f.result() for f in later)]

            yield each
    finally:
        torch.set_num_threads(threads)


def stream_record(model: DNAModel, tokens: np.ndarray, chunk_size: int, on_tracks=None) -> torch.Tensor:
    """Stream one record (uint8 tokens) through `model` in chunks of `chunk_size`; return class
    probabilities (n_classes,). `on_tracks(start, probs)` receives per-position track probabilities
    (n, n_tracks) for positions start.. as they become final, in order."""
    each = None if on_tracks is None else (lambda start, probs: on_tracks(start, probs[0]))
    return stream_rows(model, [tokens], chunk_size, each)[0]


def stream_strands(model: DNAModel, tokens: np.ndarray, chunk_size: int, on_tracks=None, on_chunk=None
                   ) -> torch.Tensor:
    """`stream_record` of a record and its reverse complement at once, as the two rows of one stream (with two
    or more torch threads, two streams stepped side by side: `stream_rows`). On the whole K-12 chromosome the
    two rows took 0.87-0.99 of the time of streaming the strands one after the other, for about 150 MB more
    peak memory (each step holds chunk_size positions of each strand), and side by side took 0.77-0.91 of the
    two rows' time (five alternating pairs each). Returns both rows' class probabilities (2, n_classes).
    `on_tracks(start, probs, strand)` receives each row's track probabilities as they become final: strand 1
    at forward positions start.., strand -1 at positions start.. of the reverse complement, the two strands'
    deliveries interleaved. `on_chunk(n)` hears of each n bases fed."""
    def each(start: int, probs: np.ndarray) -> None:
        on_tracks(start, probs[0], strand=1)
        on_tracks(start, probs[1], strand=-1)

    return stream_rows(model, [tokens, reverse_complement(tokens)], chunk_size, on_tracks and each, on_chunk)


def score_record(
    model: DNAModel, tokens: np.ndarray, chunk_size: int, rc_average: bool = False, on_tracks=None
) -> np.ndarray:
    """Class probabilities of one record; with `rc_average`, the mean of the record and its reverse
    complement, so a sequence and its reverse complement score the same. Tracks (if `on_tracks`) are
    delivered for the forward strand, and with `rc_average` both strands stream at once (`stream_strands`):
    `on_tracks(start, probs, strand=-1)` then also receives the reverse strand in reverse-complement
    coordinates, interleaved with the forward strand's deliveries."""
    if not rc_average:
        return stream_record(model, tokens, chunk_size, on_tracks).numpy()
    forward, reverse = stream_strands(model, tokens, chunk_size, on_tracks)
    return ((forward + reverse) / 2).numpy()
