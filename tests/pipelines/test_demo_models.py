"""The trained demo models that ship in the package, on the example files that ship with them: the known
answers are in the files themselves (the FASTA headers carry the truth; the wav file was spoken from
EXAMPLE_PHRASES by a voice held out of training)."""

import json
from importlib import resources
from pathlib import Path

import pytest

from swa_stream.pipelines.bundles import default_model_dir
from swa_stream.pipelines.cli import main
from swa_stream.tasks.asr.synthetic import EXAMPLE_PHRASES
from swa_stream.tasks.dna.tokenizer import read_fasta

EXAMPLES = resources.files("swa_stream.pipelines").joinpath("examples")


@pytest.mark.parametrize("kind", ["dna", "asr"])
def test_the_demo_models_ship_in_the_package_and_are_small(kind):
    folder = default_model_dir(kind)
    assert (folder / "config.json").is_file()
    assert (folder / "model.safetensors").stat().st_size < 20 * 2**20


@pytest.mark.parametrize("chunk_ms", ["160", "37"])
def test_asr_demo_transcribes_the_bundled_example(chunk_ms, capsys):
    wav = str(EXAMPLES.joinpath("asr_demo.wav"))
    assert main(["transcribe", wav, "--format", "jsonl", "--chunk-ms", chunk_ms]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    finals = [line for line in lines if line["type"] == "final"]
    assert [f["text"] for f in finals] == list(EXAMPLE_PHRASES)
    assert any(line["type"] == "partial" for line in lines)
    first, second = finals
    assert 0 < first["start"] < first["end"] < second["start"] < second["end"]  # the pause separates them


def test_dna_demo_scores_the_bundled_example_in_order(tmp_path):
    fasta = str(EXAMPLES.joinpath("dna_demo.fa"))
    assert main(["score-fasta", fasta, "--model", "dna-demo", "--out", str(tmp_path / "out.zarr"),
                 "--tsv", str(tmp_path / "out.tsv"), "--chunk-size", "100"]) == 0
    rows = [line.split("\t") for line in (tmp_path / "out.tsv").read_text().splitlines()]
    assert rows[0][4:] == ["p_far", "p_near", "n_fraction"]
    assert [row[2] for row in rows[1:]] == [rec.id for rec in read_fasta(fasta)]


def test_dna_demo_is_accurate_on_fresh_benchmark_records(tmp_path):
    """200 new records from the test distribution (a seed no split uses), scored by score-fasta."""
    import numpy as np

    from swa_stream.tasks.dna.synthetic import make_records

    records = make_records(200, "fresh", np.random.default_rng(2026), length=320, mutation=0.1)
    fasta = tmp_path / "fresh.fa"
    fasta.write_text("".join(f">{rec.id}\n{rec.sequence}\n" for rec in records))
    tsv = tmp_path / "out.tsv"
    assert main(["score-fasta", str(fasta), "--model", "dna-demo", "--out", str(tmp_path / "out.zarr"),
                 "--tsv", str(tsv)]) == 0
    rows = [line.split("\t") for line in tsv.read_text().splitlines()[1:]]
    predicted = ["near" if float(row[5]) > 0.5 else "far" for row in rows]
    accuracy = np.mean([p == rec.label for p, rec in zip(predicted, records, strict=True)])
    assert accuracy >= 0.93  # measured 97.3% on the 1,000 test records (docs/dna.md)


SPLICE = Path(__file__).resolve().parents[3] / "shared" / "data" / "splice" / "statlog_dna_splice.fa"


@pytest.mark.skipif(not SPLICE.is_file(), reason="../shared/data/splice is not beside the checkout")
def test_primate_splice_on_held_out_junctions_streams_exactly(tmp_path):
    """The first 300 of StatLog's test sequences (none trained on or chosen by), scored by score-fasta
    whole and in 7 bp steps: the same scores, and the classes in the headers found as the docs say."""
    import csv

    lines = SPLICE.read_text().splitlines()  # one header line and one 60 bp line per record
    pairs = [(h, seq) for h, seq in zip(lines[::2], lines[1::2], strict=True) if "split=test" in h][:300]
    fasta = tmp_path / "junctions.fa"
    fasta.write_text("".join(f"{h}\n{seq}\n" for h, seq in pairs))
    records = list(read_fasta(fasta))
    scores = {}
    for name, chunk in (("whole", "16384"), ("steps", "7")):
        tsv = tmp_path / f"{name}.tsv"
        assert main(["score-fasta", str(fasta), "--model", "primate-splice", "--out", str(tmp_path / f"{name}.zarr"),
                     "--tsv", str(tsv), "--chunk-size", chunk]) == 0
        scores[name] = list(csv.DictReader(tsv.open(), delimiter="\t"))
    classes = ["n", "ei", "ie"]
    probs = {name: [[float(r[f"p_{c}"]) for c in classes] for r in rows] for name, rows in scores.items()}
    assert sum(probs["whole"], []) == pytest.approx(sum(probs["steps"], []), abs=1e-5)
    truth = [r.description.split("class=")[1].split()[0] for r in records]
    predicted = [classes[max(range(3), key=p.__getitem__)] for p in probs["whole"]]
    accuracy = sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth)
    assert accuracy > 0.94  # 96.9% on all 1,186 (docs/dna.md); logistic regression on one-hot bases: 95.6%


def test_the_demo_prints_primate_splice_on_its_bundled_junctions(capsys):
    """The twelve held-out junctions that ship with the model (first four of each class, not picked)."""
    from swa_stream.pipelines.demo import score_classifier_example

    score_classifier_example("primate-splice", "primate_splice.fa", "splice junctions", 20, "see docs")
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("dna_")]
    assert len(rows) == 12 and {row[1] for row in rows} == {"truth=n", "truth=ei", "truth=ie"}
    assert all(row[1] == f"truth={row[-1]}" for row in rows) and "12 of 12 right (see docs)" in out
