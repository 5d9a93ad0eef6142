"""The synthetic long-range benchmark does what its docstring and docs/dna.md claim, measured against the
receptive field of the demo model that configs/dna_demo.yaml builds: one layer never sees a base of both
motifs, the full stack sees both whole motifs from some position when they are near and no base of both
when they are far."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from swa_stream.config import SWAConfig
from swa_stream.tasks.dna import synthetic as syn
from swa_stream.tasks.dna.model import DNAModel
from swa_stream.tasks.dna.synthetic import CLASSES, MOTIF_A, MOTIF_B, make_records, write_examples
from swa_stream.tasks.dna.tokenizer import read_fasta

REPO = Path(__file__).resolve().parents[2]


def demo_model(n_layers: int | None = None) -> DNAModel:
    args = yaml.safe_load((REPO / "configs" / "dna_demo.yaml").read_text())["model"]["init_args"]
    encoder = dict(args["encoder"], **({"n_layers": n_layers} if n_layers else {}))
    return DNAModel(SWAConfig.from_dict(encoder), CLASSES, stem_kernel=args.get("stem_kernel", 9))


def span(model: DNAModel) -> int:
    """Positions covered by one output: left + 1 + right."""
    left, right = model.receptive_field()
    return left + 1 + right


@pytest.fixture(scope="module")
def records():
    return make_records(400, "test", np.random.default_rng(7), length=320, mutation=0.1)


def test_classes_are_balanced_and_motifs_are_planted(records):
    labels = [r.label for r in records]
    assert 150 < labels.count("near") < 250
    for rec in records:
        assert sorted(name for _, _, name in rec.motifs) == ["motif_a", "motif_b"]
    left, right = demo_model(n_layers=1).receptive_field()
    # a one-layer output that sees past an end (p < left) sees bases up to p + right: never a motif base
    for rec in records:
        assert all(start >= left + right and end <= len(rec.sequence) - left - right for start, end, _ in rec.motifs)
    # with 10% mutation most planted copies are exact: the motifs are really there
    exact = sum(rec.sequence[s:e] in (MOTIF_A, MOTIF_B) for rec in records for s, e, _ in rec.motifs)
    assert exact > 0.2 * 2 * len(records)


def test_one_layer_never_sees_both_motifs_and_the_stack_separates_the_classes(records):
    one, full = span(demo_model(n_layers=1)), span(demo_model())
    for rec in records:
        (s1, e1, _), (s2, e2, _) = sorted(rec.motifs)
        nearest = s2 - (e1 - 1) + 1  # positions from the last base of the first motif to the first of the second
        whole = e2 - s1  # positions covering both whole motifs
        assert nearest > one, rec.id
        if rec.label == "near":
            assert whole <= full, rec.id
        else:
            assert nearest > full, rec.id


def test_only_the_training_split_holds_the_easier_near_pairs(tmp_path):
    syn.write_benchmark(tmp_path, n_train=200, n_val=100, n_test=100, length=320)
    for split, near in (("train", syn.TRAIN_NEAR_GAP), ("val", syn.NEAR_GAP), ("test", syn.NEAR_GAP)):
        labels = dict(line.split("\t") for line in (tmp_path / f"{split}.labels.tsv").read_text().split("\n")[1:-1])
        starts: dict[str, list[int]] = {}
        for line in (tmp_path / f"{split}.bed").read_text().splitlines():
            rec, start, _, _ = line.split("\t")
            starts.setdefault(rec, []).append(int(start))
        gaps = {rec: abs(b - a) for rec, (a, b) in starts.items()}
        low, high = near
        assert all(low <= gaps[r] <= high for r, lab in labels.items() if lab == "near"), split
        assert all(syn.FAR_GAP[0] <= gaps[r] <= syn.FAR_GAP[1] for r, lab in labels.items() if lab == "far"), split
        assert (min(g for r, g in gaps.items() if labels[r] == "near") < syn.NEAR_GAP[0]) == (split == "train")


def test_records_must_fit_the_farthest_pair():
    shortest = syn.min_length()
    assert shortest == 225 + len(MOTIF_B) + 2 * 40 and syn.min_length(0) == 225 + len(MOTIF_B)
    (rec,) = make_records(1, "x", np.random.default_rng(0), length=shortest, mutation=0.0)
    assert len(rec.sequence) == shortest
    with pytest.raises(ValueError, match="no room for the farthest pair"):
        syn.write_benchmark("unused", length=shortest - 1)


def test_examples_alternate_and_state_their_truth(tmp_path):
    path = write_examples(tmp_path / "ex.fa", count=4)
    recs = list(read_fasta(path))
    assert [r.description.split()[1] for r in recs] == ["truth=near", "truth=far", "truth=near", "truth=far"]
    assert all(r.length == 320 for r in recs)
    assert path.read_text() == write_examples(tmp_path / "again.fa", count=4).read_text()  # seeded
