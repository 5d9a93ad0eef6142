"""The ASR data readers: NeMo manifests with relative paths, the LibriSpeech layout (flac written here),
resampling and downmixing, length-bucketed batches, and one-line errors that name the file."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from swa_stream.errors import SWAStreamError
from swa_stream.tasks.asr.audio import read_audio, resample
from swa_stream.tasks.asr.data import ASRDataModule, BucketBatchSampler, read_librispeech, read_manifest
from swa_stream.tasks.asr.text import VOCABULARY, encode


def tone(seconds: float, rate: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return x if channels == 1 else np.stack([x, 0.5 * x], axis=1)


@pytest.fixture
def manifest_dir(tmp_path):
    (tmp_path / "audio").mkdir()
    lines = []
    for i, (seconds, text) in enumerate([(0.5, "One two"), (1.0, "three"), (0.7, "Four-five!"), (1.5, "six")]):
        sf.write(tmp_path / "audio" / f"{i}.wav", tone(seconds, 16000), 16000)
        lines.append(json.dumps({"audio_filepath": f"audio/{i}.wav", "duration": seconds, "text": text}))
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "val.jsonl").write_text("\n".join(lines[:2]) + "\n")
    return tmp_path


@pytest.fixture
def librispeech(tmp_path):
    """<spk>/<chapter>/<spk>-<chapter>-<utt>.flac plus <spk>-<chapter>.trans.txt, at 16 kHz as LibriSpeech is."""
    root = tmp_path / "LibriSpeech" / "dev-clean"
    for spk, chapter in ((19, 198), (26, 495)):
        folder = root / str(spk) / str(chapter)
        folder.mkdir(parents=True)
        lines = []
        for utt in range(3):
            uid = f"{spk}-{chapter}-{utt:04d}"
            sf.write(folder / f"{uid}.flac", tone(0.3 + 0.2 * utt, 16000, 300 + 50 * utt), 16000, format="FLAC")
            lines.append(f"{uid} HELLO WORLD NUMBER {utt}")
        (folder / f"{spk}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return root


def test_manifest_paths_resolve_against_the_manifest_folder(manifest_dir, monkeypatch, tmp_path_factory):
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    utts = read_manifest(manifest_dir / "train.jsonl")
    assert [u.path for u in utts] == [manifest_dir / "audio" / f"{i}.wav" for i in range(4)]
    assert [u.duration for u in utts] == [0.5, 1.0, 0.7, 1.5]


def test_librispeech_layout(librispeech):
    utts = read_librispeech(librispeech)
    assert len(utts) == 6 and utts[0].text == "HELLO WORLD NUMBER 0"
    assert utts[0].path.suffix == ".flac" and utts[2].duration == pytest.approx(0.7)


def test_datamodule_batches_librispeech_and_manifests(librispeech, manifest_dir):
    dm = ASRDataModule(train=str(manifest_dir / "train.jsonl"), val=str(librispeech), batch_size=4)
    assert dm.labels == VOCABULARY
    batch = next(iter(dm.val_dataloader()))
    assert batch["audio"].shape[0] == 4 and batch["lengths"].max() == batch["audio"].shape[1]
    assert batch["texts"][0] == "hello world number"  # the digit is not in the vocabulary
    row = batch["targets"][0, : batch["target_lengths"][0]].tolist()
    assert row == encode("hello world number")


def test_root_makes_sources_relative(manifest_dir):
    dm = ASRDataModule(train="train.jsonl", val="val.jsonl", root=str(manifest_dir), batch_size=2)
    texts = [t for b in dm.train_dataloader() for t in b["texts"]]
    assert sorted(texts) == ["four five", "one two", "six", "three"]


def test_audio_is_resampled_and_downmixed(tmp_path):
    x = tone(1.0, 44100, channels=2)
    sf.write(tmp_path / "stereo.flac", x, 44100, format="FLAC")
    audio = read_audio(tmp_path / "stereo.flac", 16000)
    expected = resample(torch.from_numpy(sf.read(tmp_path / "stereo.flac", dtype="float32")[0].mean(1)), 44100, 16000)
    assert audio.shape == (16000,)
    torch.testing.assert_close(audio, expected)
    sf.write(tmp_path / "mono8k.ogg", tone(0.5, 8000), 8000, format="OGG")
    assert read_audio(tmp_path / "mono8k.ogg", 16000).shape == (8000,)


@pytest.mark.parametrize("content, message", [(None, "no such audio file"), (b"", "cannot read audio"),
                                              (b"RIFF....WAVEfmt garbage", "cannot read audio")])
def test_bad_audio_is_one_line_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SWAStreamError, match=message) as err:
        read_audio(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_bad_manifest_line_names_file_and_line(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"audio_filepath": "a.wav", "duration": 1, "text": "x"}\n{"text": "y"}\n')
    with pytest.raises(SWAStreamError, match=r"m.jsonl: line 2: expected a JSON object"):
        read_manifest(tmp_path / "m.jsonl")


def test_missing_librispeech_flac_is_named(librispeech):
    victim = next(librispeech.rglob("*.flac"))
    victim.unlink()
    with pytest.raises(SWAStreamError, match=f"{victim.name} is missing"):
        read_librispeech(librispeech)


def test_buckets_group_similar_durations_and_respect_limits():
    rng = np.random.default_rng(0)
    durations = list(rng.uniform(0.5, 10.0, 200))
    sampler = BucketBatchSampler(durations, batch_size=16, max_batch_seconds=60.0, seed=1)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(200))
    for b in batches:
        ds = [durations[i] for i in b]
        assert len(b) <= 16 and (len(b) == 1 or max(ds) * len(b) <= 60.0)
        assert max(ds) - min(ds) < 1.5  # neighbours in sorted order (16 of 200 span ~0.8 s), up to +-5% jitter
    padded = sum(max(durations[i] for i in b) * len(b) for b in batches)
    assert padded < 1.1 * sum(durations)  # little padding, which is what bucketing is for
    sampler.set_epoch(1)
    assert list(sampler) != batches  # a new order each epoch
    ranks = [BucketBatchSampler(durations, 16, 60.0, seed=1, num_replicas=2, rank=r) for r in (0, 1)]
    assert len(list(ranks[0])) == len(list(ranks[1])) == len(ranks[0]) >= len(batches) / 2


def test_perturb_gives_training_a_fresh_waveform_each_read_and_leaves_validation_alone(manifest_dir):
    def first_reads(dm, split):
        loader = dm.train_dataloader() if split == "train" else dm.val_dataloader()
        ds = loader.dataset
        return [ds[0]["audio"] for _ in range(2)], read_audio(ds.utterances[0].path, 16000)

    dm = ASRDataModule(train="train.jsonl", val="val.jsonl", root=str(manifest_dir), batch_size=2, perturb=True)
    (a, b), clean = first_reads(dm, "train")
    assert not torch.equal(a, b) and not torch.equal(a, clean)  # a new perturbation every read
    assert a.abs().max() <= 0.99 and abs(len(a) - len(clean)) <= 0.09 * len(clean)
    again = ASRDataModule(train="train.jsonl", val="val.jsonl", root=str(manifest_dir), batch_size=2, perturb=True)
    (a2, b2), _ = first_reads(again, "train")
    assert torch.equal(a, a2) and torch.equal(b, b2)  # seeded: a run repeats exactly
    (v1, v2), clean = first_reads(dm, "val")
    assert torch.equal(v1, clean) and torch.equal(v2, clean)


@pytest.mark.parametrize("field, value, message", [
    ("batch_size", 0, "batch_size: must be >= 1"), ("batch_size", 2.5, "batch_size: must be an integer"),
    ("max_batch_seconds", float("nan"), "max_batch_seconds: must be a finite number"),
    ("max_duration", 0.0, "max_duration: must be > 0"), ("sample_rate", -16000, "sample_rate: must be >= 1"),
    ("num_workers", -1, "num_workers: must be >= 0"), ("trim_ends", 1.5, "trim_ends: must be <= 1"),
    ("gate_quiet", -0.1, "gate_quiet: must be >= 0"), ("remake_strings", 2.0, "remake_strings: must be <= 1"),
])
def test_bad_data_numbers_are_refused_naming_the_field(manifest_dir, field, value, message):
    from swa_stream.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        ASRDataModule(train="train.jsonl", root=str(manifest_dir), **{field: value})


@pytest.mark.parametrize("kwargs, message", [
    ({"silence_no_speech": float("nan")}, "endpoint.silence_no_speech: must be a finite number"),
    ({"silence_after_speech": 0.0}, "endpoint.silence_after_speech: must be > 0"),
    ({"max_segment": "20"}, "endpoint.max_segment: must be a number or null"),
])
def test_bad_endpoint_thresholds_are_refused(kwargs, message):
    from swa_stream.errors import ConfigError
    from swa_stream.tasks.asr.decoder import EndpointConfig

    with pytest.raises(ConfigError, match=message):
        EndpointConfig(**kwargs)
    assert EndpointConfig(None, None, None).max_segment is None


def test_trim_ends_cuts_training_reads_only_and_repeats_exactly(manifest_dir):
    def reads(dm, split, k=3):
        loader = dm.train_dataloader() if split == "train" else dm.val_dataloader()
        return [loader.dataset[0]["audio"] for _ in range(k)], read_audio(loader.dataset.utterances[0].path, 16000)

    make = lambda: ASRDataModule(train="train.jsonl", val="val.jsonl", root=str(manifest_dir),  # noqa: E731
                                 batch_size=2, trim_ends=1.0)
    (a, b, c), clean = reads(make(), "train")
    for x in (a, b, c):  # each read is a contiguous piece of the clean audio, never longer
        n = len(x)
        assert 0 < n <= len(clean)
        starts = [i for i in range(len(clean) - n + 1) if torch.equal(clean[i : i + n], x)]
        assert starts
    assert [len(x) for x in reads(make(), "train")[0]] == [len(a), len(b), len(c)]  # seeded
    (v,), clean_v = reads(make(), "val", 1)
    assert torch.equal(v, clean_v)


def test_gate_quiet_keeps_the_length_and_only_silences_training_reads(manifest_dir):
    dm = ASRDataModule(train="train.jsonl", val="val.jsonl", root=str(manifest_dir), batch_size=2, gate_quiet=1.0)
    ds = dm.train_dataloader().dataset
    clean = read_audio(ds.utterances[0].path, 16000)
    gated = ds[0]["audio"]
    assert len(gated) == len(clean)
    changed = gated != clean
    assert (gated[changed] == 0).all()  # a gate only silences
    v = dm.val_dataloader().dataset
    assert torch.equal(v[0]["audio"], read_audio(v.utterances[0].path, 16000))


@pytest.fixture
def strings_dir(tmp_path):
    """Three clips named as FSDD names them (8 kHz tones with quiet ends), one string joined from them (its
    baked audio is silence, so a remade read is easy to tell), and one utterance without clips."""
    clips = tmp_path / "clips"
    clips.mkdir()
    names = []
    for digit, freq in ((1, 500.0), (2, 1000.0), (3, 1500.0)):
        x = tone(0.4, 8000, freq)
        x[:400] *= 0.01  # a quiet 50 ms at each end, as a fricative next to a vowel
        x[-400:] *= 0.01
        names.append(f"{digit}_amy_0.wav")
        sf.write(clips / names[-1], x, 8000)
    (tmp_path / "audio").mkdir()
    sf.write(tmp_path / "audio" / "s.wav", np.zeros(16000, np.float32), 16000)
    sf.write(tmp_path / "audio" / "t.wav", tone(0.5, 16000), 16000)
    lines = [{"audio_filepath": "audio/s.wav", "duration": 1.0, "text": "one two three", "clips": names},
             {"audio_filepath": "audio/t.wav", "duration": 0.5, "text": "four"}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return tmp_path


def test_remake_strings_joins_a_listed_string_again_from_its_clips_for_training_reads(strings_dir):
    make = lambda: ASRDataModule(train="train.jsonl", val="train.jsonl", root=str(strings_dir),  # noqa: E731
                                 batch_size=2, remake_strings=1.0, clips_root=str(strings_dir / "clips"))
    ds = make().train_dataloader().dataset
    reads = [ds[0]["audio"] for _ in range(4)]
    assert all(x.abs().max() > 1e-3 for x in reads)  # the baked file is silence: these were made from the clips
    assert len({len(x) for x in reads}) > 1  # fresh gaps, trims and speed each read
    for x in reads:  # every clip's tone is in it (speed perturbation moves a tone by at most 10%)
        spectrum = np.abs(np.fft.rfft(x.numpy()))
        freqs = np.fft.rfftfreq(len(x), 1 / 16000)
        for f in (500.0, 1000.0, 1500.0):
            near = (freqs > 0.88 * f) & (freqs < 1.12 * f)
            assert spectrum[near].max() > 10 * np.median(spectrum)
    assert ds[0]["text"] == "one two three"
    again = make().train_dataloader().dataset
    assert [len(again[0]["audio"]) for _ in range(4)] == [len(x) for x in reads]  # seeded
    assert torch.equal(ds[1]["audio"], read_audio(strings_dir / "audio" / "t.wav", 16000))  # no clips: as it is
    val = make().val_dataloader().dataset
    assert torch.equal(val[0]["audio"], read_audio(strings_dir / "audio" / "s.wav", 16000))  # training reads only


def test_remake_strings_names_a_missing_clip(strings_dir):
    (strings_dir / "clips" / "2_amy_0.wav").unlink()
    dm = ASRDataModule(train="train.jsonl", root=str(strings_dir), batch_size=2, remake_strings=1.0,
                       clips_root=str(strings_dir / "clips"))
    with pytest.raises(SWAStreamError, match=r"s.wav: its clip 2_amy_0.wav is not in the clips folder"):
        dm.train_dataloader().dataset[0]


def test_perturb_needs_16_khz_and_says_so_when_the_module_is_built(manifest_dir):
    with pytest.raises(SWAStreamError, match="data.perturb: needs 16000 Hz audio, the data module reads 8000 Hz"):
        ASRDataModule(train="train.jsonl", root=str(manifest_dir), sample_rate=8000, perturb=True)
