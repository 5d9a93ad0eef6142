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
import queue
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from swa_stream.errors import SWAStreamError
from swa_stream.tasks.asr.audio import Resampler, to_mono
from swa_stream.tasks.asr.decoder import CTCDecoder, EndpointConfig, Segment

STDIN = "stdin"


# ---- sources: (sample rate, iterator of mono float32 chunks) ------------------------------------------
def file_source(path: str | Path, chunk_ms: float) -> tuple[int, Iterator[np.ndarray]]:
    import soundfile as sf

    path = Path(path)
    if path.is_dir():
        raise SWAStreamError(f"{path}: is a folder, not an audio file")
    if not path.is_file():
        raise SWAStreamError(f"{path}: no such file")
    try:
        f = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise SWAStreamError(f"{path}: not a readable audio file ({_reason(err)})") from None
    return f.samplerate, _soundfile_chunks(f, chunk_ms, str(path))


def _soundfile_chunks(f, chunk_ms: float, name: str) -> Iterator[np.ndarray]:
    import soundfile as sf

    frames = _frames(f.samplerate, chunk_ms)
    with f:
        try:
            for block in f.blocks(frames, dtype="float32", always_2d=True):
                yield to_mono(block)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise SWAStreamError(f"{name}: damaged audio ({_reason(err)})") from None


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text.rsplit(": ", 1)[-1] if "Error opening" in text else text


def _frames(rate: int, chunk_ms: float) -> int:
    return max(1, round(rate * chunk_ms / 1000))


def raw_source(stream, name: str, sample_rate: int, channels: int, chunk_ms: float):
    """Headerless signed 16-bit little-endian PCM, interleaved channels."""
    frame_bytes = 2 * channels

    def chunks():
        size, pending = _frames(sample_rate, chunk_ms) * frame_bytes, b""
        while data := stream.read(size):
            data = pending + data
            cut = len(data) - len(data) % frame_bytes
            data, pending = data[:cut], data[cut:]
            if data:
                yield to_mono(np.frombuffer(data, "<i2").reshape(-1, channels).astype(np.float32) / 32768.0)

    return sample_rate, chunks()


# WAV sample formats: (format tag, bits) -> (numpy dtype, scale to [-1, 1), offset)
_WAV_FORMATS = {(1, 8): ("u1", 1 / 128, -128), (1, 16): ("<i2", 1 / 32768, 0), (1, 32): ("<i4", 1 / 2**31, 0),
                (3, 32): ("<f4", 1.0, 0), (3, 64): ("<f8", 1.0, 0)}


def wav_stream_source(stream, name: str, chunk_ms: float):
    """A WAV stream that cannot seek (a pipe): parse the RIFF header, then read PCM to the end. A data size of
    0 or 0x7fff.... / 0xffffffff (what streaming writers such as arecord and espeak-ng put there) means
    'until end of input'."""
    head = stream.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        what = "empty input" if not head else "not a WAV stream"
        raise SWAStreamError(f"{name}: {what} (use --raw --sample-rate N for headerless s16le PCM)")
    fmt = None
    while True:
        chunk = stream.read(8)
        if len(chunk) < 8:
            raise SWAStreamError(f"{name}: WAV stream ends before its data chunk")
        cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if cid == b"data":
            break
        body = stream.read(size + (size & 1))
        if cid == b"fmt ":
            if len(body) < 16:
                raise SWAStreamError(f"{name}: damaged WAV fmt chunk")
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the real tag opens the GUID
                tag = struct.unpack("<H", body[24:26])[0]
            fmt = (tag, channels, rate, bits)
    if fmt is None:
        raise SWAStreamError(f"{name}: WAV stream has no fmt chunk")
    tag, channels, rate, bits = fmt
    if (tag, bits) not in _WAV_FORMATS or channels < 1 or rate < 1:
        raise SWAStreamError(f"{name}: unsupported WAV sample format (tag {tag}, {bits} bits); convert to 16-bit PCM")
    dtype, scale, offset = _WAV_FORMATS[(tag, bits)]
    frame_bytes = channels * bits // 8
    limit = None if size in (0, 0xFFFFFFFF) or size >= 0x7FFF0000 else size

    def chunks():
        remaining, pending = limit, b""
        step = _frames(rate, chunk_ms) * frame_bytes
        while remaining is None or remaining > 0:
            data = stream.read(step if remaining is None else min(step, remaining))
            if not data:
                break
            if remaining is not None:
                remaining -= len(data)
            data = pending + data
            cut = len(data) - len(data) % frame_bytes
            data, pending = data[:cut], data[cut:]
            if data:
                x = np.frombuffer(data, dtype).astype(np.float32)
                yield to_mono(((x + offset) * scale).reshape(-1, channels))

    return rate, chunks()


def stdin_source(chunk_ms: float):
    stream = sys.stdin.buffer
    if stream.seekable():  # a redirected file: any format soundfile reads
        import soundfile as sf

        try:
            f = sf.SoundFile(stream)
        except (sf.LibsndfileError, RuntimeError, TypeError) as err:
            raise SWAStreamError(f"{STDIN}: not a readable audio stream ({_reason(err)})") from None
        return f.samplerate, _soundfile_chunks(f, chunk_ms, STDIN)
    return wav_stream_source(stream, STDIN, chunk_ms)


def mic_source(chunk_ms: float):
    """The default input device through sounddevice (PortAudio), mono at the device's own rate."""
    try:
        import sounddevice as sd
    except (ImportError, OSError) as err:  # OSError: the module loads but PortAudio does not
        raise SWAStreamError(f"--mic: no microphone support ({' '.join(str(err).split())}; "
                             "install sounddevice and PortAudio, e.g. apt-get install libportaudio2)") from None
    try:
        device = sd.query_devices(kind="input")
    except (sd.PortAudioError, ValueError) as err:
        raise SWAStreamError(f"--mic: no input device ({' '.join(str(err).split())})") from None
    rate = int(device["default_samplerate"])
    blocks: queue.Queue = queue.Queue()

    def chunks():
        try:
            with sd.InputStream(samplerate=rate, channels=1, dtype="float32", blocksize=_frames(rate, chunk_ms),
                                callback=lambda data, frames, t, status: blocks.put(data[:, 0].copy())):
                while True:
                    yield blocks.get()
        except sd.PortAudioError as err:
            raise SWAStreamError(f"--mic: {' '.join(str(err).split())}") from None

    print(f"listening on {device['name']} at {rate} Hz; Ctrl-C to stop", file=sys.stderr)
    return rate, chunks()


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


def _endpoint(args) -> EndpointConfig | None:
    if args.no_endpoint:
        return None

    def rule(v):
        return v if v > 0 else None

    return EndpointConfig(rule(args.endpoint_silence_no_speech), rule(args.endpoint_silence), rule(args.max_segment))


def _source(args):
    if args.mic:
        if args.input is not None or args.raw:
            raise SWAStreamError("transcribe: --mic takes no PATH and no --raw")
        return mic_source(args.chunk_ms), "microphone"
    if args.input is None:
        raise SWAStreamError("transcribe: give a PATH, - for stdin, or --mic")
    name = STDIN if args.input == "-" else args.input
    if args.raw:
        if not args.sample_rate or args.sample_rate <= 0 or args.channels < 1:
            raise SWAStreamError("transcribe: --raw needs --sample-rate N (and --channels >= 1)")
        if args.input == "-":
            return raw_source(sys.stdin.buffer, name, args.sample_rate, args.channels, args.chunk_ms), name
        path = Path(args.input)
        if not path.is_file():
            raise SWAStreamError(f"{path}: no such file")
        return raw_source(path.open("rb"), name, args.sample_rate, args.channels, args.chunk_ms), name
    if args.input == "-":
        return stdin_source(args.chunk_ms), name
    return file_source(args.input, args.chunk_ms), name


def run(args) -> None:
    if not args.chunk_ms > 0:
        raise SWAStreamError(f"--chunk-ms: must be > 0, got {args.chunk_ms}")
    if args.threads < 1:
        raise SWAStreamError(f"--threads: must be >= 1, got {args.threads}")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        _transcribe(args)
    finally:  # callers in the same process (tests, notebooks) keep their setting
        torch.set_num_threads(threads)


def _transcribe(args) -> None:
    from swa_stream.pipelines.bundles import load_asr_model

    model = load_asr_model(args.model)
    (rate, chunks), name = _source(args)
    decoder = CTCDecoder(model.labels, model.frame_rate, _endpoint(args))
    writer = Writer(args.format)
    counted = _Counted(chunks)
    try:
        transcribe_chunks(model, counted, rate, decoder, writer)
    except KeyboardInterrupt:
        if not args.mic:  # Ctrl-C ends a microphone session normally; elsewhere it interrupts (exit 130)
            raise
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    if counted.samples == 0 and not args.mic:
        raise SWAStreamError(f"{name}: no audio samples")


class _Counted:
    """Passes chunks through and counts their samples."""

    def __init__(self, chunks):
        self.chunks, self.samples = chunks, 0

    def __iter__(self):
        for chunk in self.chunks:
            self.samples += len(chunk)
            yield chunk
