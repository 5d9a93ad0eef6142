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
    out = capsys.readouterr().out
    assert "rapA" in out and "picture of the track against the annotation" in out


def test_demo_refuses_to_draw_over_its_input():
    fasta, _ = genes_demo.example_files()
    with pytest.raises(Exception, match="is the demo's input"):
        genes_demo.run(png=str(fasta))
