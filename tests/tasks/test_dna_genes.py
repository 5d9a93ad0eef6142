"""The real-genome DNA tasks: GFF3/BED truth, track-only data and training, both-strand streaming, folds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from swa_stream.config import SWAConfig
from swa_stream.tasks.dna.annotation import mask, read_bed, read_gff3, write_bed
from swa_stream.tasks.dna.data import DNADataModule
from swa_stream.tasks.dna.genes import tiles
from swa_stream.tasks.dna.model import DNAModel
from swa_stream.tasks.dna.promoters import build as build_promoters
from swa_stream.tasks.dna.promoters import read_sequences
from swa_stream.tasks.dna.tokenizer import encode, read_fasta, reverse_complement
from swa_stream.tasks.dna.track import per_position_scores, runs, stream_both_strands

EXAMPLES = Path(__file__).resolve().parents[2] / "pipelines" / "examples"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
COMPLEMENT = str.maketrans("ACGT", "TGCA")


def test_gff3_cds_land_on_start_and_stop_codons():
    """RefSeq CDS rows, read as half-open intervals, begin with a start codon and end with a stop codon
    on their own strand: an off-by-one in the coordinates would break nearly all of them."""
    seq = next(iter(read_fasta(EXAMPLES / "ecoli_k12_region.fa"))).tokens
    text = "".join("ACGTN"[t] for t in seq)
    (name, cds), = read_gff3(EXAMPLES / "ecoli_k12_region.gff3").items()
    assert name.startswith("NC_000913.3") and len(cds) == 32
    good = 0
    for start, end, strand in cds:
        gene = text[start:end] if strand == "+" else text[start:end].translate(COMPLEMENT)[::-1]
        good += gene[:3] in ("ATG", "GTG", "TTG") and gene[-3:] in ("TAA", "TAG", "TGA") and len(gene) % 3 == 0
    assert good >= 31  # RefSeq keeps a rare non-canonical start


def test_gff3_pseudo_and_feature_choice(tmp_path):
    gff = tmp_path / "a.gff3"
    gff.write_text("##gff-version 3\n"
                   "c1\tx\tCDS\t1\t9\t.\t+\t0\tID=a\n"
                   "c1\tx\tCDS\t11\t19\t.\t-\t0\tID=b;pseudo=true\n"
                   "c1\tx\tgene\t1\t19\t.\t+\t.\tID=g\n")
    assert read_gff3(gff) == {"c1": [(0, 9, "+")]}
    assert read_gff3(gff, include_pseudo=True)["c1"][1] == (10, 19, "-")
    assert read_gff3(gff, feature="gene") == {"c1": [(0, 19, "+")]}
    bad = tmp_path / "bad.gff3"
    bad.write_text("c1\tx\tCDS\t1\n")
    with pytest.raises(Exception, match="line 1: a GFF3 row has 9"):
        read_gff3(bad)


def test_mask_strands_and_bed_round_trip(tmp_path):
    intervals = [(2, 5, "+"), (4, 8, "-"), (9, 10, ".")]
    assert mask(10, intervals).tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 0, 1]
    assert mask(10, intervals, strand="+").tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 0, 1]
    write_bed(tmp_path / "x.bed", {"r": intervals})
    assert sorted(read_bed(tmp_path / "x.bed")["r"]) == sorted(intervals)


def test_tiles_move_intervals_into_tile_coordinates():
    records = [("chr", "A" * 25)]
    out = list(tiles(records, {"chr": [(3, 12, "+"), (18, 30, "-")]}, 10, "g|"))
    assert [name for name, _, _ in out] == ["g|chr:0-10", "g|chr:10-20", "g|chr:20-25"]
    assert [iv for _, _, iv in out] == [[(3, 10, "+")], [(0, 2, "+"), (8, 10, "-")], [(0, 5, "-")]]


def _track_only_folder(root: Path, n: int = 12, length: int = 300) -> None:
    """Records whose truth is 'inside a run of C': learnable by a tiny model in a few steps."""
    rng = np.random.default_rng(0)
    bed = {}
    for split in ("train", "val", "test"):
        with open(root / f"{split}.fa", "w") as fa:
            for i in range(n):
                seq = list(rng.choice(list("AGT"), size=length))
                a = int(rng.integers(20, length - 120))
                seq[a : a + 80] = "C" * 80
                fa.write(f">{split}{i}\n{''.join(seq)}\n")
                bed[f"{split}{i}"] = [(a, a + 80, "+")]
        write_bed(root / f"{split}.bed", bed)


def test_track_only_data_trains_with_per_position_metrics(tmp_path):
    import lightning as L

    from swa_stream.tasks.dna.module import GenomicsTask

    _track_only_folder(tmp_path)
    dm = DNADataModule(root=str(tmp_path), batch_size=4, reverse_complement=True)
    assert dm.labels == []
    task = GenomicsTask(encoder=SWAConfig(d_model=16, n_heads=2, n_layers=1, window=(8, 8)), labels=dm.labels,
                        lr=1e-2, warmup_steps=1, stem_kernel=3)
    trainer = L.Trainer(max_epochs=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(task, dm)
    metrics = trainer.validate(task, dm, verbose=False)[0]
    assert {"val/track_acc", "val/track_auroc", "val/track_f1"} <= metrics.keys()
    assert "val/acc" not in metrics  # no record classes, no class metrics
    assert metrics["val/track_auroc"] > 0.9


def test_reverse_complement_augmentation_flips_the_track_with_the_sequence(tmp_path):
    _track_only_folder(tmp_path, n=1)
    dm = DNADataModule(root=str(tmp_path), batch_size=1, reverse_complement=True)
    dm.setup()
    original = dm._splits["train"][0]
    dataset = dm.train_dataloader().dataset
    seen = {dataset[0].tokens.tobytes() for _ in range(40)}
    assert seen == {original.tokens.tobytes(), reverse_complement(original.tokens).tobytes()}
    for _ in range(10):
        ex = dataset[0]
        assert (ex.tokens[ex.track.astype(bool)] == encode("C")[0]).all() or \
               (ex.tokens[ex.track.astype(bool)] == encode("G")[0]).all()


def test_both_strands_streamed_equal_offline_on_both_strands():
    torch.manual_seed(0)
    cfg = SWAConfig(d_model=16, n_heads=2, n_layers=3, window=[(4, 4), (4, 4), (3, 3)], downsample=[1, 2, 1])
    model = DNAModel(cfg, [], stem_kernel=5).eval()
    tokens = np.random.default_rng(1).integers(0, 5, 257).astype(np.uint8)
    streamed = stream_both_strands(model, tokens, chunk=19)
    with torch.no_grad():
        fwd = torch.sigmoid(model(torch.from_numpy(tokens.astype(np.int64))[None])[1][0, :, 0]).numpy()
        rc = torch.sigmoid(model(torch.from_numpy(reverse_complement(tokens).astype(np.int64))[None])[1][0, :, 0])
    np.testing.assert_allclose(streamed, (fwd + rc.numpy()[::-1]) / 2, atol=1e-5)


def test_per_position_scores_and_runs():
    truth = np.array([0, 0, 1, 1, 1, 0])
    prob = np.array([0.1, 0.6, 0.9, 0.8, 0.4, 0.2])
    s = per_position_scores(prob, truth)
    assert s["accuracy"] == pytest.approx(4 / 6) and s["recall"] == pytest.approx(2 / 3)
    assert s["auroc"] == pytest.approx(8 / 9)
    assert per_position_scores(prob, truth, valid=truth == 1)["accuracy"] == pytest.approx(2 / 3)
    assert runs(prob) == [(1, 4)]
    calls = np.array([0, 1, 1, 1, 0, 0], dtype=np.float32)  # 0/1 calls: sensitivity 2/3, specificity 2/3
    assert per_position_scores(calls, truth)["auroc"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert "auroc" not in per_position_scores(np.ones(6), truth)  # a constant ranks nothing


@pytest.mark.skipif(not (SHARED / "promoters").is_dir(), reason="../shared/data/promoters is not beside the checkout")
def test_promoter_folds_are_stratified_and_disjoint(tmp_path):
    build_promoters(SHARED, tmp_path, folds=5)
    everything = sorted(encode(seq).tobytes() for name in ("Ecoli_prom.fa", "Ecoli_non_prom.fa")
                        for seq in read_sequences(SHARED / "promoters" / name))
    tests = []
    for k in range(5):
        fold = {split: [line.split("\t") for line in (tmp_path / f"fold{k}" / f"{split}.labels.tsv").read_text()
                        .splitlines()[1:]] for split in ("train", "val", "test")}
        seqs = {split: [r.tokens.tobytes() for r in read_fasta(tmp_path / f"fold{k}" / f"{split}.fa")]
                for split in fold}
        assert sorted(seqs["train"] + seqs["val"] + seqs["test"]) == everything  # each fold uses every record once
        positives = sum(label == "promoter" for _, label in fold["test"])
        assert positives in (134, 135)
        tests += seqs["test"]
    assert sorted(tests) == everything  # the test fifths partition the data


@pytest.mark.skipif(not (SHARED / "promoters").is_dir(), reason="../shared/data/promoters is not beside the checkout")
def test_bacillus_joins_only_the_training_parts(tmp_path):
    build_promoters(SHARED, tmp_path / "plain", folds=5)
    build_promoters(SHARED, tmp_path / "mixed", folds=5, bacillus=True)
    bacillus = sorted(encode(seq).tobytes() for name in ("Bacillus_prom.fa", "Bacillus_non_prom.fa")
                      for seq in read_sequences(SHARED / "promoters" / name))

    def tokens(folder, split):
        return sorted(r.tokens.tobytes() for r in read_fasta(folder / f"{split}.fa"))

    for fold in [f"fold{k}" for k in range(5)] + ["all"]:
        plain, mixed = tmp_path / "plain" / fold, tmp_path / "mixed" / fold
        for split in ("val", "test"):  # the E. coli splits that select and score are the same files
            assert (plain / f"{split}.fa").read_bytes() == (mixed / f"{split}.fa").read_bytes()
        assert tokens(mixed, "train") == sorted(tokens(plain, "train") + bacillus)
        labels = dict(line.split("\t") for line in (mixed / "train.labels.tsv").read_text().splitlines()[1:])
        assert sum(v == "promoter" for v in labels.values()) == sum(
            v == "promoter" for v in dict(line.split("\t") for line in (plain / "train.labels.tsv").read_text()
                                          .splitlines()[1:]).values()) + 373


@pytest.mark.skipif(not (SHARED / "splice").is_dir(), reason="../shared/data/splice is not beside the checkout")
def test_splice_keeps_statlogs_split(tmp_path):
    from swa_stream.tasks.dna.splice import build as build_splice

    assert build_splice(SHARED, tmp_path) == {"train": 1800, "val": 200, "test": 1186}
    given = {}  # the shared FASTA's own split and class per sequence
    for record in read_fasta(SHARED / "splice" / "statlog_dna_splice.fa"):
        fields = dict(f.split("=") for f in record.description.split()[1:])
        given.setdefault(fields["split"], []).append((record.tokens.tobytes(), fields["class"]))

    def written(split):
        labels = dict(line.split("\t") for line in (tmp_path / f"{split}.labels.tsv").read_text().splitlines()[1:])
        return [(r.tokens.tobytes(), labels[r.id]) for r in read_fasta(tmp_path / f"{split}.fa")]

    assert written("test") == given["test"]  # StatLog's test sequences, in order, with their classes
    assert sorted(written("train") + written("val")) == sorted(given["train"])
    assert (tmp_path / "classes.txt").read_text().split() == ["n", "ei", "ie"]


def test_genome_negatives_come_from_convergent_gaps_and_gene_interiors_only():
    import random

    from swa_stream.tasks.dna.promoters import WIDTH, candidate_windows

    rng = np.random.default_rng(5)
    seq = "".join(rng.choice(list("ACGT"), 3000))
    calls = [(100, 700, "+"), (900, 1500, "-"),  # -> <- : the gap 700..900 holds no start
             (1600, 1700, "-"), (1800, 2400, "+"),  # <- -> : a divergent gap (both starts face it) gives nothing
             (2500, 2590, "+")]  # too short for a window 200 bp past its start
    gaps, inside = candidate_windows(seq, calls, random.Random(0))
    assert gaps == [seq[800 - WIDTH // 2 : 800 - WIDTH // 2 + WIDTH]]
    assert len(inside) == 3 and all(len(w) == WIDTH for w in inside)
    spans = [(300, 700), (900, 1300), (2000, 2400)]  # where each gene's window may lie: >= 200 bp past the start
    for window, (lo, hi) in zip(inside, spans, strict=True):
        assert any(seq[at : at + WIDTH] == window for at in range(lo, hi - WIDTH + 1))


def test_export_carries_the_training_data_and_a_track_only_bundle_loads(tmp_path):
    import json

    import lightning as L

    from swa_stream.pipelines import export
    from swa_stream.pipelines.bundles import load_model
    from swa_stream.tasks.dna.module import GenomicsTask

    _track_only_folder(tmp_path, n=4)
    card = [{"name": "runs of C", "licence": "CC0", "source": "this test"}]
    dm = DNADataModule(root=str(tmp_path), batch_size=4)
    task = GenomicsTask(encoder=SWAConfig(d_model=16, n_heads=2, n_layers=1, window=(8, 8)), labels=dm.labels,
                        stem_kernel=3, training_data=card, record_length=81, absolute_positions=True)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path / "run", limit_val_batches=1)
    trainer.fit(task, dm)
    ckpt = next((tmp_path / "run").rglob("*.ckpt"))
    export.run(str(ckpt), str(tmp_path / "bundle"))
    config = json.loads((tmp_path / "bundle" / "config.json").read_text())["config"]
    assert config["training_data"] == card and config["classes"] == [] and config["record_length"] == 81
    assert config["absolute_positions"] is True
    model = load_model(tmp_path / "bundle", "dna")
    assert model.record_length == 81 and model.absolute_positions
    assert torch.equal(model.positions.weight, task.model.positions.weight)  # the trained vectors travel
    tokens = next(iter(read_fasta(tmp_path / "test.fa"))).tokens
    assert stream_both_strands(model, tokens, chunk=50).shape == tokens.shape


def test_absolute_positions_need_a_record_length_and_a_boolean():
    from swa_stream.errors import SWAStreamError
    from swa_stream.tasks.dna.module import GenomicsTask
    from swa_stream.tasks.dna.schema import DNASchema

    with pytest.raises(ValueError, match="absolute_positions: needs record_length"):
        GenomicsTask(encoder=SWAConfig(d_model=16, n_heads=2, n_layers=1, window=(8, 8)), labels=["a", "b"],
                     absolute_positions=True)
    config = {"encoder": {"d_model": 16, "n_heads": 2, "n_layers": 1, "window": [8, 8]}, "classes": ["a", "b"],
              "record_length": 60, "absolute_positions": "yes"}
    with pytest.raises(SWAStreamError, match="absolute_positions: expected"):
        DNASchema().parse(config)


@pytest.mark.parametrize("value", [0, -5, 2.5, "81", True])
def test_a_bad_record_length_is_refused_naming_the_field(value):
    from swa_stream.errors import SWAStreamError
    from swa_stream.tasks.dna.module import GenomicsTask
    from swa_stream.tasks.dna.schema import DNASchema

    config = {"encoder": {"d_model": 16, "n_heads": 2, "n_layers": 1, "window": [8, 8]}, "classes": [],
              "record_length": value}
    with pytest.raises(SWAStreamError, match="record_length"):
        DNASchema().parse(config)
    with pytest.raises((ValueError, SWAStreamError), match="record_length"):
        GenomicsTask(encoder=SWAConfig(d_model=16, n_heads=2, n_layers=1, window=(8, 8)), labels=[],
                     record_length=value)


def test_table_layout_trains_from_csv_with_a_header_and_a_chosen_label_column(tmp_path):
    import bz2

    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("test", 6)):
        rows = ["name,sequence,kind"]
        for i in range(n):
            kind = "gc" if i % 2 else "at"
            seq = "".join(rng.choice(list("GC" if kind == "gc" else "AT"), size=30))
            rows.append(f"{split}{i},{seq},{kind}")
        data = ("\n".join(rows) + "\n").encode()
        if split == "test":  # a compressed table is recognised by content
            (tmp_path / "test.csv.bz2").write_bytes(bz2.compress(data))
        else:
            (tmp_path / "train.csv").write_bytes(data)
    dm = DNADataModule(root=str(tmp_path), batch_size=4, label_column="kind", val_fraction=0.25)
    assert dm.layout == "table" and dm.labels == ["at", "gc"]
    dm.setup()
    assert len(dm._splits["train"]) == 15 and len(dm._splits["val"]) == 5 and len(dm._splits["test"]) == 6
    for ex in dm._splits["test"]:  # each row's class is the one its sequence was drawn for
        assert set(ex.tokens.tolist()) <= ({1, 2} if ex.label == 1 else {0, 3})
    with pytest.raises(Exception, match="no 'label' column"):
        DNADataModule(root=str(tmp_path))
