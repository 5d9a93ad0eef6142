"""`swa-stream transcribe`: files at any rate, stdin WAV, raw PCM, the four formats, endpointing, flushing at
the end and on Ctrl-C, identical finals for any --chunk-ms, and one-line errors for bad input.

The model is random (seeded) with a sharpened head: what it says is nonsense, but it says a lot, which is
what exactness and the CLI's plumbing need; accuracy belongs to the trained demo model."""

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swa_stream import SWAConfig
from swa_stream.bundle import save_bundle
from swa_stream.pipelines.cli import main
from swa_stream.pipelines.transcribe import transcribe_chunks
from swa_stream.tasks.asr.audio import read_audio
from swa_stream.tasks.asr.decoder import CTCDecoder, EndpointConfig
from swa_stream.tasks.asr.frontend import FrontendConfig
from swa_stream.tasks.asr.model import ASRModel
from swa_stream.tasks.asr.text import VOCABULARY

CLI = [sys.executable, "-m", "swa_stream.pipelines.cli"]


def random_model() -> ASRModel:
    torch.manual_seed(0)
    m = ASRModel(FrontendConfig(d_model=32, conv_channels=8),
                 SWAConfig(d_model=32, n_heads=2, n_layers=2, window=[(8, 0), (8, 1)]), VOCABULARY).eval()
    with torch.no_grad():
        m.frontend.norm.mean.fill_(-8.0)
        m.frontend.norm.std.fill_(4.0)
        m.head.weight.mul_(8.0)  # decisive argmaxes: no near-ties for float rounding to flip
        m.head.bias.zero_()
        m.head.bias[0] = 6.0
    return m


def speechlike(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.001 * rng.standard_normal(len(t))
    for k, start in enumerate(np.arange(0.3, seconds - 0.3, 0.9)):
        span = (t >= start) & (t < start + 0.5)
        x[span] += 0.4 * np.sin(2 * np.pi * (250 + 90 * k) * t[span]) * np.hanning(span.sum())
    x = x.astype(np.float32)
    return x if channels == 1 else np.stack([x, 0.7 * x], axis=1)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("asr_bundle")
    model = random_model()
    save_bundle(folder, model, "asr", model.config())
    return folder


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audio")
    stereo = (speechlike(6.0, 44100, channels=2) * 32767).astype("<i2")  # the same integers in both files
    sf.write(folder / "talk.wav", stereo, 44100)
    sf.write(folder / "talk.flac", stereo, 44100, format="FLAC")
    sf.write(folder / "talk.ogg", speechlike(3.0, 22050), 22050, format="OGG")
    pcm = (speechlike(5.0, 8000, seed=3) * 32767).astype("<i2")
    (folder / "talk.s16le").write_bytes(pcm.tobytes())
    sf.write(folder / "talk8k.wav", pcm, 8000, subtype="PCM_16")
    return folder


def run(capsys, *args):
    code = main(["transcribe", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def finals(out: str) -> list[dict]:
    return [d for d in map(json.loads, out.splitlines()) if d["type"] == "final"]


class Pipe(io.RawIOBase):
    """stdin as a pipe: readable, not seekable."""

    def __init__(self, data: bytes):
        self.data = io.BytesIO(data)

    def readable(self):
        return True

    def readinto(self, b):
        chunk = self.data.read(len(b))
        b[: len(chunk)] = chunk
        return len(chunk)


def set_stdin(monkeypatch, data: bytes, seekable: bool = False):
    raw = io.BytesIO(data) if seekable else io.BufferedReader(Pipe(data))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(raw))


# ---- exactness ------------------------------------------------------------------------------------
def test_finals_are_identical_for_any_chunk_ms(bundle, audio_files, capsys):
    results = []
    for chunk_ms in (10, 37.5, 160, 1000, 60000):
        code, out, _ = run(capsys, audio_files / "talk.wav", "--model", bundle, "--format", "jsonl",
                           "--chunk-ms", chunk_ms, "--max-segment", "1.5")
        assert code == 0
        results.append(finals(out))
    assert len(results[0]) >= 3 and all(r == results[0] for r in results)
    assert all(w["start"] <= w["end"] for seg in results[0] for w in seg["words"])


def test_streamed_transcript_equals_offline_decoding_to_the_last_frame(bundle, audio_files):
    """The stream ends with the same end padding as the model's offline forward, so nothing is lost."""
    model = random_model()
    audio = read_audio(audio_files / "talk.wav", 16000)
    decoder = CTCDecoder(model.labels, model.frame_rate, EndpointConfig())
    with torch.no_grad():
        log_probs, _ = model(audio[None])
    segments, state = decoder.step(log_probs[0], decoder.init_state())
    offline = segments + decoder.flush(state)
    streamed = transcribe_chunks(model, iter(audio.numpy().reshape(-1, 4000)), 16000, decoder)
    assert streamed == offline and offline


def test_ctrl_c_flushes_what_was_heard(bundle, audio_files):
    model = random_model()
    audio = read_audio(audio_files / "talk.wav", 16000)
    decoder = CTCDecoder(model.labels, model.frame_rate, min_confidence=0.0)  # a random model is unsure

    def interrupted():
        yield from audio[:40000].numpy().reshape(-1, 4000)
        raise KeyboardInterrupt

    collected = []
    writer = type("W", (), {"final": lambda self, s: collected.append(s), "partial": lambda self, t: None})()
    with pytest.raises(KeyboardInterrupt):
        transcribe_chunks(model, interrupted(), 16000, decoder, writer)
    assert collected and collected == transcribe_chunks(model, iter([audio[:40000].numpy()]), 16000, decoder)


# ---- sources --------------------------------------------------------------------------------------
def test_flac_ogg_and_stereo_files(bundle, audio_files, capsys):
    code, wav_out, _ = run(capsys, audio_files / "talk.wav", "--model", bundle, "--format", "jsonl")
    code2, flac_out, _ = run(capsys, audio_files / "talk.flac", "--model", bundle, "--format", "jsonl")
    assert code == code2 == 0 and finals(wav_out) == finals(flac_out)  # lossless: the same samples
    code, out, _ = run(capsys, audio_files / "talk.ogg", "--model", bundle)
    assert code == 0 and out.strip()


@pytest.mark.skipif("MP3" not in sf.available_formats(), reason="this libsndfile reads no MP3")
@settings(max_examples=12, deadline=None)
@given(chunk_ms=st.floats(5.0, 2000.0))
def test_an_mp3_read_in_chunks_is_the_mp3_decoded_whole(audio_files, chunk_ms):
    """python-soundfile's read() seeks after every read, and a seek resets libsndfile's MP3 decoder: the frame
    after each chunk boundary decoded to noise. Chunks from a file, a redirected stdin and a pipe must
    join into exactly the samples of one whole decode."""
    from swa_stream.pipelines.sources import _whole_stream_source, file_source, stdin_source

    path = audio_files / "talk.mp3"
    if not path.exists():
        sf.write(path, speechlike(4.0, 44100, seed=5), 44100, format="MP3")
    whole, rate = sf.read(path, dtype="float32")
    got_rate, chunks = file_source(path, chunk_ms)
    assert got_rate == rate == 44100 and np.array_equal(np.concatenate(list(chunks)), whole)
    _, piped = _whole_stream_source(path.read_bytes(), "stdin", chunk_ms)  # a pipe: decoded from memory
    assert np.array_equal(np.concatenate(list(piped)), whole)
    with open(path, "rb") as f, pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "stdin", io.TextIOWrapper(f))
        _, redirected = stdin_source(chunk_ms)
        assert np.array_equal(np.concatenate(list(redirected)), whole)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (make installs it)")
def test_formats_only_ffmpeg_reads_stream_at_any_chunk_size_and_stop_ffmpeg_early(bundle, audio_files, capsys,
                                                                                   tmp_path):
    """An m4a (AAC) file goes through ffmpeg as it decodes: identical finals for any --chunk-ms, and a
    stream stopped early leaves no ffmpeg behind. Without ffmpeg on PATH, one line says what to install."""
    from swa_stream.pipelines.sources import file_source

    path = tmp_path / "talk.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(audio_files / "talk.wav"), "-c:a", "aac", str(path)],
                   check=True)
    results = []
    for chunk_ms in (20, 160, 5000):
        code, out, _ = run(capsys, path, "--model", bundle, "--format", "jsonl", "--chunk-ms", chunk_ms)
        assert code == 0
        results.append(finals(out))
    assert results[0] and all(r == results[0] for r in results)
    rate, chunks = file_source(path, 160.0)
    assert rate == 16000 and len(next(chunks)) == 2560
    chunks.close()  # as transcribe does on Ctrl-C
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _is_ffmpeg_child(int(p))]
    bare = subprocess.run(CLI + ["transcribe", str(path), "--model", str(bundle)], capture_output=True, text=True,
                          env={**os.environ, "PATH": str(tmp_path)}, timeout=300)
    assert bare.returncode == 2 and bare.stderr.count("\n") == 1
    assert "m4a, mp4, webm and Opus need ffmpeg and ffprobe (apt-get install ffmpeg)" in bare.stderr


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (make installs it)")
def test_ffmpeg_inputs_a_user_might_have(bundle, audio_files, capsys, tmp_path, monkeypatch):
    """Names that ffmpeg would read as an option or a protocol ("-memo.m4a", "voice:1.m4a"), a name that is
    not UTF-8, a damaged file whose decoder errors overflow a pipe (ffmpeg once blocked on them, and the reader
    with it), and an m4a piped in whose chunks are never read (no ffmpeg starts, no temp file stays)."""
    from swa_stream.pipelines.sources import _whole_stream_source

    memo = tmp_path / "memo.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(audio_files / "talk.wav"), "-c:a", "aac", str(memo)],
                   check=True)
    _, expected, _ = run(capsys, memo, "--model", bundle)
    assert expected.strip()
    monkeypatch.chdir(tmp_path)  # names as a user types them, relative to where they are
    for name in ("./-memo.m4a", "voice:1.m4a", "2024-05-01T10:30:00.m4a"):
        (tmp_path / name).write_bytes(memo.read_bytes())
        code, out, err = run(capsys, name, "--model", bundle)
        assert code == 0 and out == expected, err
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.m4a"))
    odd.write_bytes(b"not audio at all\n" * 50)
    code, _, err = run(capsys, odd, "--model", bundle)
    assert code == 2 and err.count("\n") == 1 and "not a readable audio file" in err
    long = (speechlike(90.0, 16000, seed=7) * 32767).astype("<i2")
    sf.write(tmp_path / "long.wav", long, 16000)
    damaged = tmp_path / "damaged.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(tmp_path / "long.wav"), "-c:a", "aac", "-movflags",
                    "+faststart", str(damaged)], check=True)  # the index first, the audio after it
    data = bytearray(damaged.read_bytes())
    audio = data.index(b"mdat") + 1000
    data[audio::40] = bytes(len(data[audio::40]))  # every 40th byte of the audio zeroed: an error per frame
    damaged.write_bytes(bytes(data))
    result = subprocess.run(CLI + ["transcribe", str(damaged), "--model", str(bundle)], capture_output=True,
                            text=True, timeout=240)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "damaged audio (ffmpeg: " in result.stderr
    before = set(os.listdir(tempfile.gettempdir()))
    rate, chunks = _whole_stream_source(memo.read_bytes(), "stdin", 160.0)
    assert rate == 16000 and not [p for p in os.listdir("/proc") if p.isdigit() and _is_ffmpeg_child(int(p))]
    del chunks
    assert set(os.listdir(tempfile.gettempdir())) == before


def _is_ffmpeg_child(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip() == "ffmpeg" and int(fields[1]) == os.getpid() and fields[0] != "Z"
    except OSError:
        return False


def test_stdin_wav_pipe_and_redirected_file_match_the_file(bundle, audio_files, capsys, monkeypatch):
    _, expected, _ = run(capsys, audio_files / "talk8k.wav", "--model", bundle, "--format", "jsonl")
    for seekable in (False, True):
        set_stdin(monkeypatch, (audio_files / "talk8k.wav").read_bytes(), seekable)
        code, out, _ = run(capsys, "-", "--model", bundle, "--format", "jsonl", "--chunk-ms", "70")
        assert code == 0 and finals(out) == finals(expected)


def test_stdin_wav_with_streaming_header_sizes(bundle, audio_files, capsys, monkeypatch):
    """arecord and espeak-ng write 0x7ffff000 / 0xffffffff as sizes when they stream: read to the end."""
    data = bytearray((audio_files / "talk8k.wav").read_bytes())
    data[4:8] = data[40:44] = (0x7FFFF000).to_bytes(4, "little")
    _, expected, _ = run(capsys, audio_files / "talk8k.wav", "--model", bundle, "--format", "jsonl")
    set_stdin(monkeypatch, bytes(data))
    code, out, _ = run(capsys, "-", "--model", bundle, "--format", "jsonl")
    assert code == 0 and finals(out) == finals(expected)


def test_raw_pcm_from_stdin(bundle, audio_files, capsys, monkeypatch):
    _, expected, _ = run(capsys, audio_files / "talk8k.wav", "--model", bundle, "--format", "jsonl")
    set_stdin(monkeypatch, (audio_files / "talk.s16le").read_bytes())
    code, out, _ = run(capsys, "-", "--raw", "--sample-rate", "8000", "--model", bundle, "--format", "jsonl",
                       "--chunk-ms", "33")
    assert code == 0 and finals(out) == finals(expected) and finals(out)


def test_real_pipe_through_the_console_script(bundle, audio_files):
    result = subprocess.run(
        [sys.executable, "-m", "swa_stream.pipelines.cli", "transcribe", "-", "--model", str(bundle)],
        input=(audio_files / "talk8k.wav").read_bytes(), capture_output=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert result.stdout.decode().strip()


# ---- formats --------------------------------------------------------------------------------------
def test_several_inputs_in_one_process_are_each_their_own_stream(bundle, audio_files, capsys, tmp_path):
    """transcribe A B C: each input's lines are what transcribing it alone gives, labelled with its name; a bad
    input in the middle is one error line and the rest go on (exit 2, and a last line counting failures);
    subtitles, which are one file per input, are refused for several."""
    files = [audio_files / "talk.wav", audio_files / "talk8k.wav", audio_files / "talk.ogg"]
    alone = []
    for f in files:
        code, out, _ = run(capsys, f, "--model", bundle, "--format", "jsonl")
        assert code == 0
        alone.append(finals(out))
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio\n")
    code, out, err = run(capsys, files[0], bad, *files[1:], "--model", bundle, "--format", "jsonl")
    assert code == 2 and err.splitlines() == [
        f"swa-stream: error: {bad}: not a readable audio file (Format not recognised; ffmpeg: {bad}: Invalid data "
        "found when processing input)" if shutil.which("ffmpeg") else
        f"swa-stream: error: {bad}: not a readable audio file (Format not recognised); m4a, mp4, webm and Opus "
        "need ffmpeg and ffprobe (apt-get install ffmpeg)",
        "swa-stream: error: 1 of 4 inputs could not be transcribed (each is named above)"]
    lines = [json.loads(line) for line in out.splitlines()]
    for f, expected in zip(files, alone, strict=True):
        mine = [{k: v for k, v in d.items() if k != "file"} for d in lines if d["file"] == str(f)]
        assert [d for d in mine if d["type"] == "final"] == expected
        assert mine[-1] == {"type": "done", "segments": len(expected)}
    code, text, _ = run(capsys, *files, "--model", bundle)
    assert code == 0 and {line.split("\t")[0] for line in text.splitlines()} == {str(f) for f in files}
    code, _, err = run(capsys, *files, "--model", bundle, "--format", "srt")
    assert code == 2 and "--format srt: subtitles are one file per input" in err
    code, _, err = run(capsys, "-", "-", "--model", bundle)
    assert code == 2 and "-: given more than once" in err


def test_jsonl_has_partial_and_final_lines(bundle, audio_files, capsys):
    _, out, _ = run(capsys, audio_files / "talk.wav", "--model", bundle, "--format", "jsonl", "--max-segment", "2")
    lines = [json.loads(line) for line in out.splitlines()]
    assert {"partial", "final"} <= {d["type"] for d in lines}
    final = finals(out)[0]
    assert set(final) == {"type", "text", "start", "end", "words"}
    assert final["text"] == " ".join(w["word"] for w in final["words"])
    assert final["start"] == final["words"][0]["start"] and final["end"] == final["words"][-1]["end"]


@pytest.mark.parametrize("fmt, first, arrow", [("srt", "1", "00:00:0"), ("vtt", "WEBVTT", "00:00:0")])
def test_subtitles(bundle, audio_files, capsys, fmt, first, arrow):
    code, out, _ = run(capsys, audio_files / "talk.wav", "--model", bundle, "--format", fmt, "--max-segment", "2")
    lines = out.splitlines()
    assert code == 0 and lines[0] == first
    cues = [line for line in lines if " --> " in line]
    assert len(cues) >= 2 and all(c.startswith(arrow) for c in cues)
    assert ("," in cues[0]) == (fmt == "srt")


def test_text_format_prints_one_line_per_segment(bundle, audio_files, capsys):
    code, out, _ = run(capsys, audio_files / "talk.wav", "--model", bundle, "--max-segment", "2")
    _, jsonl, _ = run(capsys, audio_files / "talk.wav", "--model", bundle, "--format", "jsonl", "--max-segment", "2")
    assert code == 0 and out.splitlines() == [d["text"] for d in finals(jsonl)]


# ---- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, content, message", [
    ("missing.wav", None, "no such file"),
    ("empty.wav", b"", "not a readable audio file"),
    ("corrupt.flac", b"fLaC\x00\x00\x00\x22" + b"\x13" * 60, "not a readable audio file"),
    ("notes.mp3", b"this is text, not audio", "not a readable audio file"),
    ("silent.wav", "zero-frames", "no audio samples"),
])
def test_bad_files_are_one_line_naming_the_file(bundle, tmp_path, capsys, name, content, message):
    path = tmp_path / name
    if content == "zero-frames":
        sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    elif content is not None:
        path.write_bytes(content)
    code, out, err = run(capsys, path, "--model", bundle)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"swa-stream: error: {path}: ") and message in err


@pytest.mark.parametrize("args, stdin, message", [
    (["-"], b"", "stdin: empty input"),
    (["-"], b"ID3 not a wav at all", "stdin: not a WAV stream"),
    (["-", "--raw"], b"\x00\x01", "--raw needs --sample-rate"),
    (["-", "--raw", "--sample-rate", "16000"], b"", "stdin: no audio samples"),
    ([], b"", "give a PATH, - for stdin, or --mic"),
    (["x.wav", "--chunk-ms", "0"], b"", "--chunk-ms: must be in (0, 600000] milliseconds"),
])
def test_bad_stdin_and_arguments(bundle, capsys, monkeypatch, args, stdin, message):
    set_stdin(monkeypatch, stdin)
    code, _, err = run(capsys, *args, "--model", bundle)
    assert code == 2 and message in err and err.count("\n") == 1


def test_a_folder_is_not_an_audio_file(bundle, tmp_path, capsys):
    code, _, err = run(capsys, tmp_path, "--model", bundle)
    assert code == 2 and f"{tmp_path}: is a directory, not an audio file" in err


def test_mic_without_portaudio_or_device_is_one_line(bundle, capsys):
    try:
        import sounddevice as sd

        sd.query_devices(kind="input")
        pytest.skip("this machine has a working input device")
    except Exception:  # no module, no PortAudio or no device: exactly the case under test
        pass
    code, _, err = run(capsys, "--mic", "--model", bundle)
    assert code == 2 and err.startswith("swa-stream: error: --mic: ") and err.count("\n") == 1


def test_model_that_is_not_a_bundle(tmp_path, audio_files, capsys):
    code, _, err = run(capsys, audio_files / "talk.wav", "--model", tmp_path)
    assert code == 2 and "config.json: missing" in err
