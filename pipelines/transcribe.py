"""`swa-stream transcribe PATH|- [PATH ...] [--raw --sample-rate N] [--mic]`: speech to text, streamed.

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

from swa_stream.errors import SWAStreamError, printable, stdin_at_most_once
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

    def __init__(self, fmt: str, out=None, err=None, label: str | None = None):
        """`label`: the input's name, when several are transcribed: text lines start with it and a tab, and
        jsonl lines carry it as "file"."""
        self.fmt, self.out, self.err, self.label = fmt, out or sys.stdout, err or sys.stderr, label
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
            self._write(json.dumps(self._labelled({"type": "partial", "text": text})))
        elif self.live:
            self.err.write("\r\033[K" + text)
            self.err.flush()

    def final(self, seg: Segment) -> None:
        self.count, self.last_partial = self.count + 1, ""
        if self.live:
            self.err.write("\r\033[K")
        if self.fmt == "text":
            self._write(seg.text if self.label is None else f"{self.label}\t{seg.text}")
        elif self.fmt == "jsonl":
            self._write(json.dumps(self._labelled(seg.to_dict())))
        else:
            sep = "," if self.fmt == "srt" else "."
            cue = f"{_clock(seg.start, sep)} --> {_clock(seg.end, sep)}\n{seg.text}\n"
            self._write(f"{self.count}\n{cue}" if self.fmt == "srt" else cue)

    def done(self) -> None:
        """The input has ended. With several inputs, say so: text gives an input that held no words its
        name and an empty transcript, and jsonl ends each input with {"file", "type": "done", "segments"}."""
        if self.label is None:
            return
        if self.fmt == "jsonl":
            self._write(json.dumps({"file": self.label, "type": "done", "segments": self.count}))
        elif self.fmt == "text" and not self.count:
            self._write(f"{self.label}\t")

    def _labelled(self, line: dict) -> dict:
        return line if self.label is None else {"file": self.label, **line}


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


def _source(args, path: str | None):
    if args.mic:
        return mic_source(args.chunk_ms), "microphone"
    name = STDIN if path == "-" else path
    if args.raw:
        stream = stdin_stream() if path == "-" else open_input(Path(path))
        return raw_source(stream, name, args.sample_rate, args.channels, args.chunk_ms), name
    if path == "-":
        return stdin_source(args.chunk_ms), name
    return file_source(path, args.chunk_ms), name


def _check_inputs(args) -> list[str | None]:
    """The inputs to transcribe in turn ([None] for the microphone), refused before any model loads."""
    if args.mic:
        if args.inputs or args.raw:
            raise SWAStreamError("transcribe: --mic takes no PATH and no --raw")
        return [None]
    if not args.inputs:
        raise SWAStreamError("transcribe: give a PATH, - for stdin, or --mic")
    stdin_at_most_once(args.inputs)
    if len(args.inputs) > 1 and args.format in ("srt", "vtt"):
        raise SWAStreamError(f"--format {args.format}: subtitles are one file per input; give one PATH, or use "
                             "--format text or jsonl, which label each line with its file")
    return list(args.inputs)


def run(args) -> None:
    endpoint = _check_args(args)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        _transcribe(args, endpoint)
    finally:  # callers in the same process (tests, notebooks) keep their setting
        torch.set_num_threads(threads)


def _transcribe(args, endpoint: EndpointConfig | None) -> None:
    """Each input in turn, in one process (the model loads once). With several, a bad one is one error line
    and the rest go on; the exit status then says that one failed."""
    from swa_stream.pipelines.bundles import load_asr_model

    inputs = _check_inputs(args)
    model = load_asr_model(args.model)
    if len(inputs) == 1:
        return _transcribe_one(args, endpoint, model, inputs[0], None)
    failed = 0
    for path in inputs:
        try:
            if not _transcribe_one(args, endpoint, model, path, STDIN if path == "-" else path):
                return  # the reader left
        except SWAStreamError as err:
            failed += 1
            print(f"swa-stream: error: {printable(str(err))}", file=sys.stderr, flush=True)
    if failed:
        raise SWAStreamError(f"{failed} of {len(inputs)} inputs could not be transcribed (each is named above)")


def _transcribe_one(args, endpoint: EndpointConfig | None, model, path: str | None, label: str | None) -> bool:
    """One input through the model; False when the reader of stdout has left (`| head`), so stop."""
    (rate, chunks), name = _source(args, path)
    check_sample_rate(rate, name)  # a file's header may say anything
    orig, new = resample_ratio(rate, model.sample_rate)
    effective = model.sample_rate * orig / new
    if effective != rate:
        print(f"swa-stream: note: {name}: {rate} Hz is resampled as {effective:g} Hz ({abs(effective / rate - 1):.1e} "
              "off), which keeps the resampling filter small", file=sys.stderr)
    decoder = CTCDecoder.for_model(model, endpoint, args.open_vocabulary)
    checked = _Checked(chunks)
    writer = Writer(args.format, label=label)
    try:
        transcribe_chunks(model, checked, rate, decoder, writer)
        writer.done()
    except KeyboardInterrupt:
        if not args.mic:  # Ctrl-C ends a microphone session normally; elsewhere it interrupts (exit 130)
            raise
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return False
    finally:
        if checked.repaired:
            print(f"swa-stream: warning: {name}: {checked.repaired} samples were NaN or infinite (the first at "
                  f"{checked.first_bad / rate:.3f} s); they were transcribed as silence", file=sys.stderr)
    if checked.samples == 0 and not args.mic:
        raise SWAStreamError(f"{name}: no audio samples")
    return True


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
