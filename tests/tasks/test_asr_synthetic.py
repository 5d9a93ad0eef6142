"""`swa-stream demo-data asr`: espeak-ng digit sequences as 16 kHz wav files with NeMo manifests, split by
(voice, variant) combination so that test voices are never heard in training."""

import json
import shutil

import pytest
import soundfile as sf

from swa_stream.pipelines.cli import main
from swa_stream.tasks.asr.data import ASRDataModule
from swa_stream.tasks.asr.synthetic import DIGITS

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("asr_demo")
    assert main(["demo-data", "asr", "--out", str(out), "--n-train", "8", "--n-val", "3", "--n-test", "3",
                 "--jobs", "2"]) == 0
    return out


def manifest(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_manifests_describe_16k_wavs_of_digit_words(demo):
    for split, n in (("train", 8), ("val", 3), ("test", 3)):
        entries = manifest(demo / f"{split}.jsonl")
        assert len(entries) == n
        for e in entries:
            info = sf.info(str(demo / e["audio_filepath"]))
            assert info.samplerate == 16000 and info.channels == 1
            assert e["duration"] == pytest.approx(info.duration, abs=1e-3)
            words = e["text"].split()
            assert 1 <= len(words) <= 8 and set(words) <= set(DIGITS)
            assert 110 <= e["speed"] <= 220 and 10 <= e["snr"] <= 30


def test_test_voices_never_occur_in_training(demo):
    splits = json.loads((demo / "voices.json").read_text())
    combos = {k: {tuple(c) for c in v} for k, v in splits.items()}
    assert not combos["train"] & combos["test"] and not combos["train"] & combos["val"]
    assert len({v for v, _ in combos["train"]}) >= 5  # several accents, e.g. en-us, en-gb, en-gb-scotland, en-029
    for split in ("val", "test"):
        used = {(e["voice"], e["variant"]) for e in manifest(demo / f"{split}.jsonl")}
        assert used <= combos[split]


def test_output_does_not_depend_on_the_number_of_workers(demo, tmp_path):
    assert main(["demo-data", "asr", "--out", str(tmp_path), "--n-train", "8", "--n-val", "3", "--n-test", "3",
                 "--jobs", "1"]) == 0
    assert (tmp_path / "test.jsonl").read_text() == (demo / "test.jsonl").read_text()
    assert (tmp_path / "wav/train/000007.wav").read_bytes() == (demo / "wav/train/000007.wav").read_bytes()


def test_the_data_module_reads_it(demo):
    dm = ASRDataModule(train="train.jsonl", val="val.jsonl", test="test.jsonl", root=str(demo), batch_size=4)
    batch = next(iter(dm.test_dataloader()))
    assert batch["audio"].shape[0] == 3 and all(set(t.split()) <= set(DIGITS) for t in batch["texts"])
