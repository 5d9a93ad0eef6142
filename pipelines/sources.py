"""Audio sources for `swa-stream transcribe` (and the server's client): each gives (sample rate, an iterator of
mono float32 chunks of about --chunk-ms) and fails with one line naming the input.

A file is read through soundfile; a FIFO, /dev/stdin or <(...) is read once, in order, as a stream: WAV
with PCM or float samples is decoded on the fly, other formats once the stream has ended. What libsndfile
does not read (m4a/AAC voice memos, mp4 and webm recordings, Opus) is decoded by ffmpeg where it is
installed, as it runs, to 16 kHz mono 16-bit PCM.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from swa_stream.errors import SWAStreamError
from swa_stream.tasks.asr.audio import to_mono

STDIN = "stdin"


# ---- sources: (sample rate, iterator of mono float32 chunks) ------------------------------------------
def file_source(path: str | Path, chunk_ms: float) -> tuple[int, Iterator[np.ndarray]]:
    """A file soundfile reads; a FIFO, /dev/stdin or <(...) is read once, in order, as a WAV stream."""
    import soundfile as sf

    path = Path(path)
    stream = open_input(path)
    if not stream.seekable():
        return wav_stream_source(stream, str(path), chunk_ms)
    try:
        f = sf.SoundFile(stream)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        stream.close()
        return ffmpeg_source(path, str(path), chunk_ms, _reason(err))
    return f.samplerate, _soundfile_chunks(f, chunk_ms, str(path), stream)


FFMPEG_RATE = 16000  # what ffmpeg decodes to: the demo models' rate, so the resampler has nothing to do


def _ffmpeg_url(path: Path) -> str:
    """ffmpeg's name for a local file: "file:" and the absolute path, so that a name starting with "-" is no
    option and one holding ":" ("voice:1.m4a", "2024-05-01T10:30:00.m4a") no protocol."""
    return "file:" + os.path.abspath(path)


def ffmpeg_source(path: Path, name: str, chunk_ms: float, why: str, keep=None):
    """A file libsndfile refused (`why`), decoded by ffmpeg as it runs: 16 kHz mono s16le on a pipe. Without
    ffmpeg, or if ffprobe finds no audio in it, one line. ffmpeg starts with the first chunk asked for and
    stops when the chunks end or are closed; `keep` (an open file that `path` names through /dev/fd) is
    passed to both tools and closed then too."""
    ffmpeg, ffprobe = shutil.which("ffmpeg"), shutil.which("ffprobe")
    fds = (keep.fileno(),) if keep is not None else ()
    url = _ffmpeg_url(path)

    def said(text: str, fallback: str) -> str:  # ffmpeg's last line, naming the input as the user named it
        last = (text.strip().splitlines() or [fallback])[-1]
        for shown in (url, str(path)):  # as ffmpeg printed it: its bytes read as UTF-8, bad ones replaced
            last = last.replace(os.fsencode(shown).decode("utf-8", "replace"), name)
        return _reason(RuntimeError(last))

    try:
        if ffmpeg is None or ffprobe is None:
            raise SWAStreamError(f"{name}: not a readable audio file ({why}); m4a, mp4, webm and Opus need ffmpeg "
                                 "and ffprobe (apt-get install ffmpeg)")
        probe = subprocess.run([ffprobe, "-v", "error", "-select_streams", "a:0", "-show_entries",
                                "stream=codec_name", "-of", "csv=p=0", url], capture_output=True, text=True,
                               encoding="utf-8", errors="replace", stdin=subprocess.DEVNULL, pass_fds=fds)
        if probe.returncode or not probe.stdout.strip():
            raise SWAStreamError(f"{name}: not a readable audio file ({why}; ffmpeg: "
                                 f"{said(probe.stderr, 'no audio stream')})")
    except BaseException:
        if keep is not None:
            keep.close()
        raise

    def run():
        # ffmpeg's messages go to a file, not a pipe: a damaged file makes it write one line per frame, and a
        # full pipe would stop it, and this reader with it
        with tempfile.TemporaryFile() as log:
            proc = subprocess.Popen([ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", url, "-vn",
                                     "-ac", "1", "-ar", str(FFMPEG_RATE), "-f", "s16le", "-"],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, pass_fds=fds)
            try:
                yield from raw_source(proc.stdout, name, FFMPEG_RATE, 1, chunk_ms)[1]
                if proc.wait() != 0:
                    log.seek(0)
                    raise SWAStreamError(f"{name}: damaged audio (ffmpeg: "
                                         f"{said(log.read().decode('utf-8', 'replace'), 'failed')})")
            finally:
                if proc.poll() is None:  # stopped early (Ctrl-C, an error downstream): ffmpeg goes too
                    proc.kill()
                    proc.wait()
                proc.stdout.close()
                if keep is not None:
                    keep.close()

    return FFMPEG_RATE, run()


def open_input(path: Path):
    """`path` opened for reading, or one true line: no such file, a directory, permission denied."""
    try:
        if path.is_dir():
            raise SWAStreamError(f"{path}: is a directory, not an audio file")
        return open(path, "rb")
    except FileNotFoundError:
        raise SWAStreamError(f"{path}: no such file") from None
    except OSError as err:  # a folder on the way that we may not enter fails the same way
        raise SWAStreamError(f"{path}: cannot read: {(err.strerror or str(err)).lower()}") from None


def _soundfile_chunks(f, chunk_ms: float, name: str, stream=None) -> Iterator[np.ndarray]:
    import soundfile as sf

    frames = _frames(f.samplerate, chunk_ms)
    try:
        with f:
            while True:
                block = read_on(f, frames)
                if not len(block):
                    return
                yield to_mono(block)
    except (sf.LibsndfileError, RuntimeError, ValueError) as err:
        raise SWAStreamError(f"{name}: damaged audio ({_reason(err)})") from None
    finally:
        if stream is not None:
            stream.close()


def read_on(f, frames: int) -> np.ndarray:
    """Up to `frames` frames (frames, channels) float32 from where the last read stopped, without a seek.

    python-soundfile's `read` seeks to where it thinks the file is after every read, and a seek resets
    libsndfile's MP3 decoder (mpg123 drops its bit reservoir): the MP3 frame or two after every read boundary
    then decode to noise (about 1 dB SNR), at every 160 ms chunk of a transcript. FSDD's validation strings
    as 44.1 kHz MP3 went from 4.0% WER to 11.5% that way (docs/asr.md). libsndfile reads on from where it
    stopped, so the seek is not needed; `blocks()` is no way out either, since it refuses codecs that cannot
    seek (GSM 6.10). Read through soundfile's own libsndfile handle; `read` only if that is not there."""
    import soundfile as sf

    lib, ffi, handle = getattr(sf, "_snd", None), getattr(sf, "_ffi", None), getattr(f, "_file", None)
    if lib is None or ffi is None or handle is None:  # another soundfile: its own read, seek and all
        return f.read(frames, dtype="float32", always_2d=True)
    out = np.empty((frames, f.channels), np.float32)
    got = lib.sf_readf_float(handle, ffi.cast("float *", out.ctypes.data), frames)
    code = lib.sf_error(handle)
    if code:
        raise RuntimeError(ffi.string(lib.sf_error_number(code)).decode("utf-8", "replace"))
    return out[: max(0, got)]


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return (text.rsplit(": ", 1)[-1] if "Error opening" in text else text).rstrip(".")


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
    'until end of input'. Other formats (ADPCM or GSM in WAV, FLAC, OGG) are read whole, then decoded."""
    seen = bytearray()

    def read(n: int) -> bytes:
        data = stream.read(n)
        seen.extend(data)
        return data

    head = read(12)
    if not head:
        raise SWAStreamError(f"{name}: empty input (use --raw --sample-rate N for headerless s16le PCM)")
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return _whole_stream_source(bytes(seen) + stream.read(), name, chunk_ms)
    fmt = None
    while True:
        chunk = read(8)
        if len(chunk) < 8:
            raise SWAStreamError(f"{name}: WAV stream ends before its data chunk")
        cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if cid == b"data":
            break
        body = read(size + (size & 1))
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
        return _whole_stream_source(bytes(seen) + stream.read(), name, chunk_ms)
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


def _whole_stream_source(data: bytes, name: str, chunk_ms: float):
    """A stream in a format that is not decoded on the fly: decoded from memory once it has all arrived."""
    import io

    import soundfile as sf

    try:
        f = sf.SoundFile(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        if data and shutil.which("ffmpeg"):  # m4a and mp4 need seeking: ffmpeg reads them from a file
            try:  # unlinked at once: nothing is left on disk, however this process ends
                kept = tempfile.TemporaryFile()
                kept.write(data)
                kept.flush()
            except OSError as problem:
                raise SWAStreamError(f"{name}: cannot hold the stream for ffmpeg in a temporary file "
                                     f"({problem.strerror or problem})") from None
            with contextlib.suppress(SWAStreamError):
                return ffmpeg_source(Path(f"/dev/fd/{kept.fileno()}"), name, chunk_ms, _reason(err), keep=kept)
        raise SWAStreamError(f"{name}: not a WAV stream nor other audio that libsndfile reads ({_reason(err)}; use "
                             "--raw --sample-rate N for headerless s16le PCM)") from None
    return f.samplerate, _soundfile_chunks(f, chunk_ms, name)


def stdin_source(chunk_ms: float):
    stream = stdin_stream()
    if stream.seekable():  # a redirected file: any format soundfile reads
        import soundfile as sf

        try:
            f = sf.SoundFile(stream)
        except (sf.LibsndfileError, RuntimeError, TypeError) as err:
            if shutil.which("ffmpeg") is None:
                raise SWAStreamError(f"{STDIN}: not a readable audio stream ({_reason(err)})") from None
            # ffmpeg opens the redirected file itself, from its start, through this process's descriptor
            return ffmpeg_source(Path(f"/proc/{os.getpid()}/fd/0"), STDIN, chunk_ms, _reason(err))
        return f.samplerate, _soundfile_chunks(f, chunk_ms, STDIN)
    return wav_stream_source(stream, STDIN, chunk_ms)


def stdin_stream():
    """Standard input as bytes, or one line when nothing is connected to it (`transcribe - <&-`)."""
    try:  # with fd 0 closed, Python starts with sys.stdin None
        stream = sys.stdin.buffer
    except AttributeError:
        raise SWAStreamError(f"{STDIN}: not open (nothing is connected to standard input)") from None
    return stream


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
