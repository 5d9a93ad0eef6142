"""The gene-track demo: stream a real E. coli K-12 region through `bacteria-genes`, both strands, and
show the track, and the genes `call-genes` calls from it, against the RefSeq annotation as a table and a
picture (matplotlib PNG).

E. coli K-12 took no part in the model's training or selection (tasks/dna/genes.py), so what the demo
shows is a held-out genome.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from swa_stream.errors import SWAStreamError

REGION = "ecoli_k12_region"


def example_files() -> tuple[Path, Path]:
    root = Path(str(resources.files("swa_stream.pipelines").joinpath("examples")))
    return root / f"{REGION}.fa", root / f"{REGION}.gff3"


def gene_table(prob: np.ndarray, genes: list[tuple[int, int, str, str]]) -> list[dict]:
    """Per annotated gene: where it is and the mean probability the track gives its bases."""
    return [{"gene": name, "start": start + 1, "end": end, "strand": strand, "bp": end - start,
             "mean_p": float(prob[start:end].mean())} for start, end, strand, name in genes]


def gene_names(gff: Path) -> list[tuple[int, int, str, str]]:
    from swa_stream.tasks.dna.annotation import gff3_features

    return [(start, end, strand, attrs.get("gene", attrs.get("ID", "?")))
            for _, (start, end, strand), attrs in gff3_features(gff)]


def _lanes(axis, genes, colour: str, title: str, length: int) -> None:
    from matplotlib.patches import FancyArrow

    for start, end, strand, name in genes:
        y = 0.65 if strand == "+" else 0.25
        size = (end - start) / 1e3
        x0, dx = (start / 1e3, size) if strand == "+" else (end / 1e3, -size)
        axis.add_patch(FancyArrow(x0, y, dx, 0, width=0.22, head_width=0.3, length_includes_head=True,
                                  head_length=min(0.4, size / 3), color=colour))
        if size > 1.2 and name:
            axis.text((start + end) / 2e3, y, name, ha="center", va="center", fontsize=7, color="white")
    axis.set_ylim(0, 0.95)
    axis.set_yticks([0.25, 0.65], ["- strand", "+ strand"])
    axis.set_xlim(0, length / 1e3)
    axis.set_title(title, fontsize=9, loc="left")


def plot(prob: np.ndarray, genes, path: Path, title: str, calls=()) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kbp = np.arange(len(prob)) / 1e3
    fig, (ax, lanes, called) = plt.subplots(3, 1, figsize=(12, 5.2), sharex=True,
                                            gridspec_kw={"height_ratios": [3, 1.3, 1.3]})
    ax.fill_between(kbp, prob, color="#3b7dd8", alpha=0.35, linewidth=0)
    ax.plot(kbp, prob, color="#1f4e99", linewidth=0.6)
    ax.axhline(0.5, color="grey", linewidth=0.6, linestyle="--")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("P(in a gene)")
    ax.set_title(title, fontsize=10)
    _lanes(lanes, genes, "#d9822b", "RefSeq CDS annotation", len(prob))
    _lanes(called, [(a, b, s, "") for a, b, s in calls], "#3b7dd8",
           "swa-stream call-genes: the open reading frames the track covers best", len(prob))
    called.set_xlabel("position in the region (kbp)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(model_name: str = "bacteria-genes", png: str = "out/bacteria-genes-demo.png") -> dict | None:
    from swa_stream.pipelines.bundles import bundled_models, load_model
    from swa_stream.tasks.dna.annotation import mask, read_gff3
    from swa_stream.tasks.dna.orfs import call_genes, stop_matches
    from swa_stream.tasks.dna.tokenizer import read_fasta
    from swa_stream.tasks.dna.track import per_position_scores, runs, stream_both_strands

    if model_name not in bundled_models():
        print(f"(no bundled {model_name} model in this checkout: skipping the gene-track demo)")
        return None
    fasta, gff = example_files()
    out = Path(png)
    if out.resolve() in (fasta.resolve(), gff.resolve()):  # before any work: no output overwrites an input
        raise SWAStreamError(f"{out}: is the demo's input; choose another picture path")
    model = load_model(model_name, "dna")
    record = next(iter(read_fasta(fasta)))
    prob = stream_both_strands(model, record.tokens, chunk=4096)
    genes = gene_names(gff)
    truth = mask(len(prob), read_gff3(gff)[record.id])
    scores = per_position_scores(prob, truth, record.tokens < 4)
    print(f"== {model_name} on {fasta.name}: {record.id}, {len(prob):,} bp of E. coli K-12 (held out from training), "
          "both strands streamed exactly in chunks of 4,096 bp")
    print(f"{'gene':<8} {'start':>7} {'end':>7} {'strand':>6} {'bp':>6} {'mean P(gene)':>13}")
    rows = gene_table(prob, genes)
    for r in rows:
        print(f"{r['gene']:<8} {r['start']:>7,} {r['end']:>7,} {r['strand']:>6} {r['bp']:>6,} {r['mean_p']:>13.3f}")
    found = sum(r["mean_p"] > 0.5 for r in rows)
    extra = [(a, b) for a, b in runs(prob, min_length=300) if truth[a:b].mean() < 0.2]
    print(f"{found} of {len(rows)} annotated genes called (mean P > 0.5); {len(extra)} called stretch(es) of 300+ bp "
          f"outside the annotation; per-base accuracy {scores['accuracy']:.1%}, AUROC {scores['auroc']:.3f} "
          f"(region only; docs/dna.md has the whole genome beside Prodigal)")
    called = call_genes(record.tokens, prob)
    calls = [(g.start, g.end, g.strand) for g in called]
    complete = [(g.start, g.end, g.strand) for g in called if g.partial == "00"]  # a cut gene has no stop to match
    match = stop_matches(complete, [(a, b, s) for a, b, s, _ in genes])
    print(f"call-genes: {len(calls)} genes called from the track ({len(calls) - len(complete)} of them cut by the "
          f"region's ends, flagged partial), {match['found']} of {match['genes']} annotated genes found by their stop "
          f"codon (precision of the complete calls {match['precision']:.2f})")
    plot(prob, genes, out, f"{model_name}: {record.description}", calls)
    print(f"picture of the track against the annotation: {out}\n")
    return {"scores": scores, "genes": rows, "calls": match}
