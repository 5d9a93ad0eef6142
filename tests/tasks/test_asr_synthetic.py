"""`swa-stream demo-data asr`: the training mixture (every installed TTS engine, augmented, and FSDD's
training speakers) and held-out espeak-ng voices and FSDD speakers, as 16 kHz wav files with NeMo manifests.
Test voices and speakers are never heard in training."""

import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf

from swa_stream.pipelines.cli import main
from swa_stream.tasks.asr import fsdd
from swa_stream.tasks.asr.data import ASRDataModule
from swa_stream.tasks.asr.engines import available
from swa_stream.tasks.asr.synthetic import DIGITS
from swa_stream.tasks.asr.text import GARBAGE

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("asr_demo")
    assert main(["demo-data", "asr", "--out", str(out), "--n-train", "40", "--n-val", "3", "--n-test", "3",
                 "--jobs", "2"]) == 0
    return out


def manifest(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_manifests_describe_16k_wavs_of_digit_words(demo):
    for split, n in (("val", 3), ("test", 3)):
        entries = manifest(demo / f"{split}.jsonl")
        assert len(entries) == n
        for e in entries:
            info = sf.info(str(demo / e["audio_filepath"]))
            assert info.samplerate == 16000 and info.channels == 1
            assert e["duration"] == pytest.approx(info.duration, abs=1e-3)
            words = e["text"].split()
            assert 1 <= len(words) <= 8 and set(words) <= set(DIGITS)
            assert 110 <= e["speed"] <= 220 and 10 <= e["snr"] <= 30


def test_training_mixture_uses_every_installed_engine_and_real_speakers(demo):
    entries = manifest(demo / "train.jsonl")
    assert len(entries) == 40
    report = json.loads((demo / "engines.json").read_text())
    assert report["installed"] == sorted(available())
    used = {e["engine"] for e in entries}
    assert used <= set(available()) | {"fsdd"} and "espeak-ng" in used
    for e in entries:
        info = sf.info(str(demo / e["audio_filepath"]))
        assert info.samplerate == 16000 and e["duration"] == pytest.approx(info.duration, abs=1e-3)
        assert set(e["text"].split()) <= set(DIGITS) | {GARBAGE} and e["text"]
        assert -50 <= e["dbfs"] <= -12
        if e["kind"] == "filler":
            assert GARBAGE in e["text"].split()
        else:
            assert GARBAGE not in e["text"].split()
    if report["fsdd"]:  # FSDD is present (../shared): its held-out speakers never reach training
        speakers = {Path(c).name.split("_")[1] for e in entries for c in e.get("clips", [])}
        assert speakers and speakers <= set(fsdd.TRAIN_SPEAKERS)


@pytest.mark.skipif(fsdd.default_root() is None, reason="FSDD (../shared/data/speech/fsdd) is not present")
def test_fsdd_held_out_sets_are_theo_and_yweweler_split_by_recording_index(demo):
    for split, indices in (("val", fsdd.VAL_INDICES), ("test", fsdd.TEST_INDICES)):
        singles = manifest(demo / f"fsdd_{split}_singles.jsonl")
        assert len(singles) == 2 * 10 * 25 and {e["speaker"] for e in singles} == {"theo", "yweweler"}
        for e in singles:
            digit, speaker, index = Path(e["audio_filepath"]).stem.split("_")
            assert int(index) in indices and e["text"] == DIGITS[int(digit)]
            assert sf.info(str(demo / e["audio_filepath"])).samplerate == 8000  # as recorded
        strings = manifest(demo / f"fsdd_{split}_strings.jsonl")
        assert len(strings) == 3  # at most --n-val / --n-test of them
        for e in strings:
            clips = [c.split("_") for c in e["clips"]]
            assert 3 <= len(clips) <= 5 and {c[1] for c in clips} == {e["speaker"]}
            assert e["text"].split() == [DIGITS[int(c[0])] for c in clips]
            assert all(int(c[2].removesuffix(".wav")) in indices for c in clips)


def test_test_voices_never_occur_in_training(demo):
    splits = json.loads((demo / "voices.json").read_text())
    combos = {k: {tuple(c) for c in v} for k, v in splits.items()}
    assert not combos["train"] & combos["test"] and not combos["train"] & combos["val"]
    assert len({v for v, _ in combos["train"]}) >= 5  # several accents, e.g. en-us, en-gb, en-gb-scotland, en-029
    for split in ("val", "test"):
        used = {(e["voice"], e["variant"]) for e in manifest(demo / f"{split}.jsonl")}
        assert used <= combos[split]


def test_output_does_not_depend_on_the_number_of_workers(demo, tmp_path):
    assert main(["demo-data", "asr", "--out", str(tmp_path), "--n-train", "40", "--n-val", "3", "--n-test", "3",
                 "--jobs", "1"]) == 0
    assert (tmp_path / "test.jsonl").read_text() == (demo / "test.jsonl").read_text()
    assert (tmp_path / "train.jsonl").read_text() == (demo / "train.jsonl").read_text()
    for i in (0, 7, 39):
        assert (tmp_path / f"wav/train/{i:06d}.wav").read_bytes() == (demo / f"wav/train/{i:06d}.wav").read_bytes()


def test_the_data_module_reads_it(demo):
    dm = ASRDataModule(train="train.jsonl", val="val.jsonl", test="test.jsonl", root=str(demo), batch_size=4)
    batch = next(iter(dm.test_dataloader()))
    assert batch["audio"].shape[0] == 3 and all(set(t.split()) <= set(DIGITS) for t in batch["texts"])
