"""`swa-stream transcribe PATH|- [--raw --sample-rate N] [--mic]`: speech to text, streamed.

source (file, stdin WAV, raw s16le PCM, microphone) -> mono chunks of --chunk-ms at the source's rate
-> exact streaming resampler -> ASRModel.step -> CTCDecoder.step -> partial and final lines.

Every stage streams exactly, so the final lines are the same for any --chunk-ms (only the partial lines,
which show progress between chunks, depend on it). At the end of input, and on Ctrl-C, everything held
back is flushed: the resampler's tail, the model's end padding and lookahead frames, the decoder's last word.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from swa_stream.errors import SWAStreamError
from swa_stream.pipelines.sources import (  # noqa: F401 - file_source and mic_source are used from here too
    STDIN,
    file_source,
    mic_source,
    open_input,
    raw_source,
    stdin_source,
    stdin_stream,
)
from swa_stream.tasks.asr.audio import Resampler, check_sample_rate, finite_samples, resample_ratio
from swa_stream.tasks.asr.decoder import CTCDecoder, EndpointConfig, Segment


# ---- writers ------------------------------------------------------------------------------------------
def _clock(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


class Writer:
    """Partial and final results to stdout in one of the formats; flushed line by line for live use."""

    def __init__(self, fmt: str, out=None, err=None):
        self.fmt, self.out, self.err = fmt, out or sys.stdout, err or sys.stderr
        self.count, self.last_partial = 0, ""
        self.live = fmt == "text" and getattr(self.err, "isatty", lambda: False)()
        if fmt == "vtt":
            self._write("WEBVTT\n")

    def _write(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def partial(self, text: str) -> None:
        if text == self.last_partial:
            return
        self.last_partial = text
        if self.fmt == "jsonl" and text:
            self._write(json.dumps({"type": "partial", "text": text}))
        elif self.live:
            self.err.write("\r\033[K" + text)
            self.err.flush()

    def final(self, seg: Segment) -> None:
        self.count, self.last_partial = self.count + 1, ""
        if self.live:
            self.err.write("\r\033[K")
        if self.fmt == "text":
            self._write(seg.text)
        elif self.fmt == "jsonl":
            self._write(json.dumps(seg.to_dict()))
        else:
            sep = "," if self.fmt == "srt" else "."
            cue = f"{_clock(seg.start, sep)} --> {_clock(seg.end, sep)}\n{seg.text}\n"
            self._write(f"{self.count}\n{cue}" if self.fmt == "srt" else cue)


# ---- the stream ---------------------------------------------------------------------------------------
@torch.no_grad()
def transcribe_chunks(model, chunks, rate: int, decoder: CTCDecoder, writer: Writer | None = None) -> list[Segment]:
    """Stream mono chunks at `rate` Hz through resampler, model and decoder; return every final segment.
    A KeyboardInterrupt flushes the stream (its last words are kept), then propagates."""
    resampler = Resampler(rate, model.sample_rate)
    rs, ms, ds = resampler.init_state(1), model.init_state(1), decoder.init_state()
    finals: list[Segment] = []

    def emit(segments):
        for seg in segments:
            finals.append(seg)
            if writer is not None:
                writer.final(seg)

    received = 0
    try:
        for chunk in chunks:
            audio, rs_next = resampler.step(torch.from_numpy(np.ascontiguousarray(chunk, np.float32))[None], rs)
            log_probs, ms_next = model.step(audio, ms)
            segments, ds_next = decoder.step(log_probs[0], ds)
            rs, ms, ds, received = rs_next, ms_next, ds_next, received + len(chunk)  # all or nothing on Ctrl-C
            emit(segments)
            if writer is not None:
                writer.partial(decoder.partial(ds))
    finally:  # end of input, Ctrl-C or an error: flush what the stages hold
        if received:
            log_probs, ms = model.step(resampler.flush(rs), ms)
            log_probs = torch.cat([log_probs, model.flush(ms)], dim=1)
            segments, ds = decoder.step(log_probs[0], ds)
            emit(segments + decoder.flush(ds))
    return finals


MAX_CHUNK_MS = 600_000.0  # ten minutes per step: more only costs memory, results do not change


def _seconds(args, flag: str) -> float | None:
    """An endpoint rule in seconds: 0 disables it; a negative or non-finite value is a mistake, not "off"."""
    value = getattr(args, flag.removeprefix("--").replace("-", "_"))
    if not 0 <= value < float("inf"):  # NaN fails too
        raise SWAStreamError(f"{flag}: must be a number of seconds >= 0 (0 disables it), got {value:g}")
    return value or None


def _check_args(args) -> EndpointConfig | None:
    """Refuse values that cannot be meant before any work; the endpoint rules that follow from them."""
    if not 0 < args.chunk_ms <= MAX_CHUNK_MS:
        raise SWAStreamError(f"--chunk-ms: must be in (0, {MAX_CHUNK_MS:g}] milliseconds, got {args.chunk_ms:g}")
    if args.threads < 1:
        raise SWAStreamError(f"--threads: must be >= 1, got {args.threads}")
    if args.raw and not args.mic:
        if args.sample_rate is None or args.channels < 1:
            raise SWAStreamError("transcribe: --raw needs --sample-rate N (and --channels >= 1)")
        check_sample_rate(args.sample_rate, "--sample-rate")
    rules = [_seconds(args, f) for f in ("--endpoint-silence-no-speech", "--endpoint-silence", "--max-segment")]
    return None if args.no_endpoint else EndpointConfig(*rules)


def _source(args):
    if args.mic:
        if args.input is not None or args.raw:
            raise SWAStreamError("transcribe: --mic takes no PATH and no --raw")
        return mic_source(args.chunk_ms), "microphone"
    if args.input is None:
        raise SWAStreamError("transcribe: give a PATH, - for stdin, or --mic")
    name = STDIN if args.input == "-" else args.input
    if args.raw:
        stream = stdin_stream() if args.input == "-" else open_input(Path(args.input))
        return raw_source(stream, name, args.sample_rate, args.channels, args.chunk_ms), name
    if args.input == "-":
        return stdin_source(args.chunk_ms), name
    return file_source(args.input, args.chunk_ms), name


def run(args) -> None:
    endpoint = _check_args(args)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        _transcribe(args, endpoint)
    finally:  # callers in the same process (tests, notebooks) keep their setting
        torch.set_num_threads(threads)


def _transcribe(args, endpoint: EndpointConfig | None) -> None:
    from swa_stream.pipelines.bundles import load_asr_model

    model = load_asr_model(args.model)
    (rate, chunks), name = _source(args)
    check_sample_rate(rate, name)  # a file's header may say anything
    orig, new = resample_ratio(rate, model.sample_rate)
    effective = model.sample_rate * orig / new
    if effective != rate:
        print(f"swa-stream: note: {name}: {rate} Hz is resampled as {effective:g} Hz ({abs(effective / rate - 1):.1e} "
              "off), which keeps the resampling filter small", file=sys.stderr)
    decoder = CTCDecoder.for_model(model, endpoint, args.open_vocabulary)
    checked = _Checked(chunks)
    try:
        transcribe_chunks(model, checked, rate, decoder, Writer(args.format))
    except KeyboardInterrupt:
        if not args.mic:  # Ctrl-C ends a microphone session normally; elsewhere it interrupts (exit 130)
            raise
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    finally:
        if checked.repaired:
            print(f"swa-stream: warning: {name}: {checked.repaired} samples were NaN or infinite (the first at "
                  f"{checked.first_bad / rate:.3f} s); they were transcribed as silence", file=sys.stderr)
    if checked.samples == 0 and not args.mic:
        raise SWAStreamError(f"{name}: no audio samples")


class _Checked:
    """Passes chunks through, counts their samples, and replaces NaN and infinite samples by silence,
    counting them: one NaN would otherwise silence every output within the encoder's reach."""

    def __init__(self, chunks):
        self.chunks, self.samples, self.repaired, self.first_bad = chunks, 0, 0, 0

    def __iter__(self):
        for chunk in self.chunks:
            chunk, bad, first = finite_samples(chunk)
            if bad and not self.repaired:
                self.first_bad = self.samples + first
            self.repaired += bad
            self.samples += len(chunk)
            yield chunk
