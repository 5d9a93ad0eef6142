"""make demo's gene track: the shipped bacteria-genes model on a real, held-out E. coli K-12 region."""

from __future__ import annotations

import pytest

from swa_stream.pipelines import genes_demo
from swa_stream.pipelines.bundles import bundled_models

pytestmark = pytest.mark.skipif("bacteria-genes" not in bundled_models(), reason="bacteria-genes is not bundled")


def test_demo_region_matches_the_annotation_and_draws_the_picture(tmp_path, capsys):
    png = tmp_path / "genes.png"
    result = genes_demo.run(png=str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert result["scores"]["accuracy"] > 0.9 and result["scores"]["auroc"] > 0.9
    called = [g for g in result["genes"] if g["mean_p"] > 0.5]
    assert len(called) >= 0.9 * len(result["genes"]) == 0.9 * 32
    assert result["calls"]["found"] >= 24 and result["calls"]["precision"] >= 0.8  # call-genes, by stop codon
    out = capsys.readouterr().out
    assert "rapA" in out and "picture of the track against the annotation" in out
    assert f"{result['calls']['found']} of 32 annotated genes found by their stop codon" in out


def test_demo_refuses_to_draw_over_its_input():
    fasta, _ = genes_demo.example_files()
    with pytest.raises(Exception, match="is the demo's input"):
        genes_demo.run(png=str(fasta))


def test_score_fasta_without_a_model_gives_the_real_gene_track(tmp_path, capsys):
    """The default model means something on real DNA: on the held-out E. coli region its bigWig track is
    high inside RefSeq's genes and low between them."""
    import numpy as np
    import pyBigWig

    from swa_stream.pipelines.cli import main
    from swa_stream.tasks.dna.annotation import mask, read_gff3

    fasta, gff = genes_demo.example_files()
    out, bw = tmp_path / "g.zarr", tmp_path / "g.bw"
    assert main(["score-fasta", str(fasta), "--out", str(out), "--tsv", str(tmp_path / "g.tsv"), "--per-position",
                 "--rc-average", "--chunk-size", "8192"]) == 0
    header = (tmp_path / "g.tsv").read_text().splitlines()[0].split("\t")
    assert not any(h.startswith("p_") for h in header)  # a track-only model has no record classes
    assert main(["export-track", str(out), "--bigwig", str(bw)]) == 0
    (name, intervals), = read_gff3(gff).items()
    with pyBigWig.open(str(bw)) as track:
        values = np.array(track.values(name, 0, track.chroms(name)))
    inside = mask(len(values), intervals).astype(bool)
    assert np.nanmean(values[inside]) > 0.8 and np.nanmean(values[~inside]) < 0.5
