"""The real-voice example that ships beside the synthetic one: two FSDD speakers held out of training
(theo, recorded near -44 dBFS, and yweweler), recordings of the test half (index 25-49), one digit string
each. The shipped asr-demo transcribes it exactly, at any chunk size."""

import json
import shutil
import sys
from importlib import resources

import pytest
import soundfile as sf

from swa_stream.pipelines.cli import main
from swa_stream.tasks.asr.fsdd import DIGITS, EXAMPLE_CLIPS, HELD_OUT_SPEAKERS, TEST_INDICES

EXAMPLE = resources.files("swa_stream.pipelines").joinpath("examples", "asr_fsdd.wav")
EXPECTED = [" ".join(DIGITS[int(name.split("_")[0])] for name in string) for string in EXAMPLE_CLIPS]


def test_the_example_is_held_out_real_speech_with_its_attribution():
    for string in EXAMPLE_CLIPS:
        for name in string:
            _, speaker, index = name.split("_")
            assert speaker in HELD_OUT_SPEAKERS and int(index) in TEST_INDICES
    info = sf.info(str(EXAMPLE))
    assert info.samplerate == 8000 and info.channels == 1
    credit = resources.files("swa_stream.pipelines").joinpath("examples", "asr_fsdd.md").read_text()
    assert "CC BY-SA 4.0" in credit and "free-spoken-digit-dataset" in credit


@pytest.mark.parametrize("chunk_ms", ["160", "45"])
def test_asr_demo_transcribes_the_real_example(chunk_ms, capsys):
    assert main(["transcribe", str(EXAMPLE), "--format", "jsonl", "--chunk-ms", chunk_ms]) == 0
    finals = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    finals = [f for f in finals if f["type"] == "final"]
    assert [f["text"] for f in finals] == EXPECTED
    assert all(0 < w["conf"] <= 1 for f in finals for w in f["words"])


@pytest.mark.skipif("MP3" not in sf.available_formats(), reason="this libsndfile reads no MP3")
def test_the_example_as_a_44k_mp3_transcribes_as_the_wav(tmp_path, capsys):
    """The example as a user might have it, an MP3 at 44.1 kHz: the same words. Before the reader stopped
    seeking between chunks, the first word was lost ("eight one")."""
    from scipy.signal import resample_poly

    audio, rate = sf.read(str(EXAMPLE), dtype="float64")
    mp3 = tmp_path / "asr_fsdd.mp3"
    sf.write(mp3, resample_poly(audio, 441, 80), 44100, format="MP3")
    assert main(["transcribe", str(mp3)]) == 0
    assert capsys.readouterr().out.splitlines() == EXPECTED


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (make installs it)")
@pytest.mark.parametrize(("suffix", "codec"), [(".m4a", ["-c:a", "aac", "-b:a", "48k"]),
                                               (".webm", ["-ar", "48000", "-c:a", "libopus", "-b:a", "24k"])])
def test_the_example_as_a_voice_memo_or_a_browser_recording(tmp_path, capsys, suffix, codec):
    """AAC in m4a (a phone's voice memo) and Opus in webm (a browser's MediaRecorder), encoded by ffmpeg: the
    same words, from the file and from a pipe."""
    import subprocess

    path = tmp_path / f"asr_fsdd{suffix}"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(EXAMPLE), *codec, str(path)], check=True)
    assert main(["transcribe", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == EXPECTED
    piped = subprocess.run([sys.executable, "-m", "swa_stream.pipelines.cli", "transcribe", "-"],
                           stdin=open(path, "rb"), capture_output=True, text=True, timeout=300)
    assert piped.returncode == 0 and piped.stdout.splitlines() == EXPECTED, piped.stderr


def test_the_lexicon_mends_misspelt_real_words(tmp_path, capsys):
    """Three held-out test clips that asr-demo spells as "fovre two three" when left to its open vocabulary:
    its lexicon (the default) makes the misspelt word the digit it is; --open-vocabulary shows the spelling."""
    from swa_stream.tasks.asr.fsdd import default_root, write_example

    if default_root() is None:
        pytest.skip("the FSDD recordings (../shared/data/speech/fsdd) are not on this machine")
    path, texts = write_example(tmp_path / "clip.wav", clips=(("5_theo_29", "2_yweweler_33", "3_yweweler_40"),))
    assert texts == ["five two three"]
    assert main(["transcribe", str(path)]) == 0
    assert capsys.readouterr().out.split() == ["five", "two", "three"]
    assert main(["transcribe", str(path), "--open-vocabulary"]) == 0
    spelled = capsys.readouterr().out.split()
    assert spelled[1:] == ["two", "three"] and spelled[0] not in DIGITS
