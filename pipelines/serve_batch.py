"""The server's compute: every open stream's audio goes through resampler -> ASRModel.step -> CTCDecoder.step,
as `transcribe` does, with all streams that have audio waiting advanced in one compute call.

`BatchedRecognizer` is the only thing the websocket handlers talk to: `open(rate)`, `feed(stream, samples)`
and `finish(stream)` return at once (feed/finish give an asyncio future of a `StepResult`), and one
scheduling task (`run`) collects the waiting work, computes it in an executor thread (so a long step never
blocks the event loop) and resolves the futures in order.

Streams share batched steps: the model's state is one ragged batch, a row per stream, each row at its own
point of its own stream (`ASRModel.step(chunk, state, counts)`). A stream joins the batch between steps
(`ASRState.cat`) and leaves it the same way (`select`); a row with no new audio takes a count of 0. Audio
that queued up for one stream while a compute call ran is merged into one longer step. Every stage streams
exactly, so neither batching nor merging changes a transcript; they amortise per-step overhead, which makes
a loaded server take bigger steps instead of falling behind. (With a model whose step takes no per-row
counts, each stream is stepped alone.) Resampling and decoding stay per stream: each has its own rate and
its own decoder state.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from swa_stream.tasks.asr.audio import Resampler
from swa_stream.tasks.asr.decoder import CTCDecoder, EndpointConfig, Segment


@dataclass
class StepResult:
    """What one message's reply reports: the segments that became final, then the current partial text."""

    finals: list[Segment]
    partial: str


@dataclass
class Stream:
    id: int
    rate: int
    resampler: Resampler
    rs: object
    ms: object
    ds: object
    received: int = 0  # samples at `rate` taken into the model
    partial: str = ""
    pending: list = field(default_factory=list)  # [(samples (n,) int16, future)] not yet computed
    eof: asyncio.Future | None = None  # set by finish(): flush once the pending audio is in
    record: object = None  # a soundfile.SoundFile receiving the raw audio (--record)
    closed: bool = False


class BatchedRecognizer:
    """Many concurrent streams over one model; see the module docstring."""

    def __init__(self, model, endpoint: EndpointConfig | None, record_dir: str | Path | None = None,
                 open_vocabulary: bool = False):
        self.model, self.endpoint = model, endpoint
        self.decoder = CTCDecoder.for_model(model, endpoint, open_vocabulary)
        self.record_dir = Path(record_dir) if record_dir else None
        self.streams: dict[int, Stream] = {}
        self._ids = itertools.count(1)
        self._resamplers: dict[int, Resampler] = {}
        self._wake = asyncio.Event()
        # one thread: torch runs with the server's --threads inside it, and steps never overlap
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="swa-compute")
        self.ragged = "counts" in inspect.signature(model.step).parameters and hasattr(type(model.init_state(1)), "cat")
        self._rows: list[Stream] = []  # the streams in the batch state's row order (compute thread only)
        self._batch = None  # their model state, one row each
        self.samples_received = self.messages_received = self.steps = self.computes = 0
        self.compute_seconds = 0.0
        self.rows_max = 0  # the most streams one model step has carried

    # ---- what the handlers call (event loop thread) -----------------------------------------------
    def open(self, rate: int) -> Stream:
        if rate not in self._resamplers:
            self._resamplers[rate] = Resampler(rate, self.model.sample_rate)
        resampler = self._resamplers[rate]
        ms = None if self.ragged else self.model.init_state(1)  # batched: the stream's row joins at its first step
        s = Stream(next(self._ids), rate, resampler, resampler.init_state(1), ms, self.decoder.init_state())
        if self.record_dir is not None:
            import soundfile as sf

            self.record_dir.mkdir(parents=True, exist_ok=True)
            s.record = sf.SoundFile(str(self.record_dir / f"stream-{s.id}.wav"), "w", rate, 1, "PCM_16")
        self.streams[s.id] = s
        return s

    def feed(self, s: Stream, pcm: np.ndarray) -> asyncio.Future:
        """Queue (n,) int16 samples at the stream's rate; the future gives this message's StepResult."""
        fut = asyncio.get_running_loop().create_future()
        s.pending.append((pcm, fut))
        if s.record is not None:  # here, not in the compute thread, so that drop() can close it at any time
            s.record.write(pcm)
        self.samples_received += len(pcm)
        self.messages_received += 1
        self._wake.set()
        return fut

    def finish(self, s: Stream) -> asyncio.Future:
        """End the stream: after its pending audio, flush every stage; the future gives the last finals."""
        s.eof = asyncio.get_running_loop().create_future()
        self._wake.set()
        return s.eof

    def drop(self, s: Stream) -> None:
        """The client went away without an eof: forget the stream, compute nothing more for it."""
        s.closed = True
        for _, fut in s.pending:
            fut.cancel()
        if s.eof is not None:
            s.eof.cancel()
        s.pending = []
        self._forget(s)

    def _forget(self, s: Stream) -> None:
        self.streams.pop(s.id, None)
        if s.record is not None:
            s.record.close()
            s.record = None

    # ---- the scheduling task ----------------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            work = []
            for s in list(self.streams.values()):
                if s.pending or s.eof is not None:
                    jobs, s.pending = s.pending, []
                    work.append((s, jobs, s.eof))
            if not work:
                continue
            started = time.perf_counter()
            compute = self._compute_batched if self.ragged else self._compute
            outcomes = await loop.run_in_executor(self._executor, compute, work)
            self.compute_seconds += time.perf_counter() - started
            self.computes += 1
            for (s, jobs, eof), outcome in zip(work, outcomes, strict=True):
                self._resolve(s, jobs, eof, outcome)

    def _resolve(self, s: Stream, jobs, eof, outcome) -> None:
        if isinstance(outcome, BaseException):
            for fut in [f for _, f in jobs] + ([eof] if eof is not None else []):
                if not fut.done():
                    fut.set_exception(outcome)
            self._forget(s)
            return
        finals, partial, flushed = outcome
        before, s.partial = s.partial, partial
        # merged messages: the last one carries the step's finals, earlier ones repeat the partial they saw
        for i, (_, fut) in enumerate(jobs):
            last = i == len(jobs) - 1
            if not fut.done():
                fut.set_result(StepResult(finals if last else [], partial if last else before))
        if not jobs and finals:  # nothing to attach the step's finals to: they go with the eof
            flushed = finals + flushed
        if eof is not None:
            if not eof.done():
                eof.set_result(StepResult(flushed, ""))
            self._forget(s)

    @torch.no_grad()
    def warm_up(self) -> None:
        """Run a throwaway two-row stream once before serving: torch's first calls of each op are slow, and
        the first real clients should not pay for them."""
        state = self.model.init_state(2)
        chunk = torch.zeros(2, self.model.sample_rate // 5)
        if self.ragged:
            _, _, state = self.model.step(chunk, state, [chunk.shape[1], chunk.shape[1] // 2])
            state = type(state).cat([state.select([0]), state.select([1])])
            self.model.flush(state, with_lengths=True)
        else:
            _, state = self.model.step(chunk, state)
            self.model.flush(state)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)

    # ---- compute (executor thread) ----------------------------------------------------------------
    @torch.no_grad()
    def _compute(self, work) -> list:
        outcomes = []
        for s, jobs, eof in work:
            try:
                outcomes.append(self._advance(s, [x for x, _ in jobs], eof is not None))
            except Exception as err:  # one broken stream must not take the others down
                outcomes.append(err)
        return outcomes

    def _advance(self, s: Stream, chunks: list[np.ndarray], eof: bool):
        """One step over the stream's merged audio, then (at eof) the flush `transcribe` does at the end."""
        finals, flushed = [], []
        if chunks:
            # s16le -> float32 exactly as soundfile reads a 16-bit PCM file, so finals match `transcribe`
            audio = (np.concatenate(chunks) if len(chunks) > 1 else chunks[0]).astype(np.float32) / 32768.0
            y, s.rs = s.resampler.step(torch.from_numpy(audio)[None], s.rs)
            log_probs, s.ms = self.model.step(y, s.ms)
            finals, s.ds = self.decoder.step(log_probs[0], s.ds)
            s.received += len(audio)
            self.steps += 1
        partial = self.decoder.partial(s.ds)
        if eof and s.received:
            log_probs, s.ms = self.model.step(s.resampler.flush(s.rs), s.ms)
            log_probs = torch.cat([log_probs, self.model.flush(s.ms)], dim=1)
            segments, s.ds = self.decoder.step(log_probs[0], s.ds)
            flushed = segments + self.decoder.flush(s.ds)
        return finals, partial, flushed

    # ---- the batched path: one ragged model step for every stream with audio ----------------------------
    @torch.no_grad()
    def _compute_batched(self, work) -> list:
        try:
            return self._batched(work)
        except Exception as err:  # a failed batch step leaves no trustworthy state: its streams end with it
            self._rows, self._batch = [], None
            return [err] * len(work)

    def _batched(self, work) -> list:
        """Resample each stream's merged audio, step the model once over all rows, decode row by row; then
        the ending streams flush together and leave the batch."""
        self._admit([s for s, _, _ in work])
        row_of = {s.id: i for i, s in enumerate(self._rows)}
        audio: dict[int, torch.Tensor] = {}
        outcomes: dict[int, object] = {}
        for s, jobs, _ in work:
            try:
                audio[s.id] = self._resample(s, [x for x, _ in jobs]) if jobs else None
            except Exception as err:  # one broken stream must not take the others down
                outcomes[s.id] = err
        stepped = [s for s, jobs, _ in work if audio.get(s.id) is not None]
        finals = self._step_rows(stepped, [audio[s.id] for s in stepped], row_of)
        ending = [s for s, _, eof in work if eof is not None and s.id not in outcomes and s.received]
        flushed = self._flush_rows(ending, row_of) if ending else {}
        self._leave({s.id for s, _, eof in work if eof is not None})
        for s, _, _ in work:
            if s.id not in outcomes:
                outcomes[s.id] = (finals.get(s.id, []), self.decoder.partial(s.ds), flushed.get(s.id, []))
        return [outcomes[s.id] for s, _, _ in work]

    def _admit(self, streams: list[Stream]) -> None:
        """Rows leave when their stream is gone (dropped, or ended last time); new streams join at the end."""
        keep = [i for i, s in enumerate(self._rows) if s.id in self.streams and not s.closed]
        if len(keep) < len(self._rows):
            self._rows = [self._rows[i] for i in keep]
            self._batch = self._batch.select(keep) if keep else None
        present = {s.id for s in self._rows}
        new = [s for s in streams if s.id not in present]
        if new:
            fresh = self.model.init_state(len(new))
            self._batch = fresh if self._batch is None else type(fresh).cat([self._batch, fresh])
            self._rows += new

    def _leave(self, ids: set[int]) -> None:
        keep = [i for i, s in enumerate(self._rows) if s.id not in ids]
        if len(keep) < len(self._rows):
            self._rows = [self._rows[i] for i in keep]
            self._batch = self._batch.select(keep) if keep else None

    def _resample(self, s: Stream, chunks: list[np.ndarray]) -> torch.Tensor:
        pcm = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
        audio = torch.from_numpy(pcm.astype(np.float32) / 32768.0)  # as soundfile reads 16-bit PCM
        y, s.rs = s.resampler.step(audio[None], s.rs)
        s.received += len(pcm)
        return y[0]

    def _step_rows(self, streams: list[Stream], audio: list[torch.Tensor], row_of: dict) -> dict[int, list]:
        """One model step: row b of the batch takes its stream's new audio (count 0 for the rest)."""
        if not streams:
            return {}
        counts = [0] * len(self._rows)
        longest = max(len(y) for y in audio)
        chunk = torch.zeros(len(self._rows), longest)
        for s, y in zip(streams, audio, strict=True):
            chunk[row_of[s.id], : len(y)] = y
            counts[row_of[s.id]] = len(y)
        log_probs, frames, self._batch = self.model.step(chunk, self._batch, counts)
        self.steps += 1
        self.rows_max = max(self.rows_max, len(streams))
        finals = {}
        for s in streams:
            row = row_of[s.id]
            finals[s.id], s.ds = self.decoder.step(log_probs[row, : int(frames[row])], s.ds)
        return finals

    def _flush_rows(self, streams: list[Stream], row_of: dict) -> dict[int, list]:
        """The ending streams' rows together: the resamplers' tails, then the model's flush, then the decoders'."""
        rows = [row_of[s.id] for s in streams]
        state = self._batch.select(rows)
        tails = [s.resampler.flush(s.rs)[0] for s in streams]
        chunk = torch.zeros(len(rows), max(len(t) for t in tails))
        for i, t in enumerate(tails):
            chunk[i, : len(t)] = t
        head, head_frames, state = self.model.step(chunk, state, [len(t) for t in tails])
        tail, tail_frames = self.model.flush(state, with_lengths=True)
        flushed = {}
        for i, s in enumerate(streams):
            lp = torch.cat([head[i, : int(head_frames[i])], tail[i, : int(tail_frames[i])]])
            segments, s.ds = self.decoder.step(lp, s.ds)
            flushed[s.id] = segments + self.decoder.flush(s.ds)
        return flushed
