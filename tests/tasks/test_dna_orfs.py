"""Gene calls from a coding track (tasks/dna/orfs.py): candidates equal a brute-force enumeration of every
start and stop on all six frames, planted genes are called with their exact codons on both strands, the
overlap rule holds, and N never makes a codon."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swa_stream.tasks.dna.orfs import call_genes, called_track, candidates, stop_matches
from swa_stream.tasks.dna.tokenizer import encode, reverse_complement

STOPS, STARTS = {"TAA", "TAG", "TGA"}, {"ATG", "GTG", "TTG"}
COMP = str.maketrans("ACGT", "ACGT"[::-1])


def rc(s: str) -> str:
    return s.translate(COMP)[::-1]


def brute_force(seq: str, prob: np.ndarray, theta: float, min_length: int, penalty: float,
                edges: bool = False, stops: set = STOPS) -> set:
    """Every frame's stop-to-stop stretches, read codon by codon, on the sequence and its reverse complement.
    With `edges`, the frame's first codon also starts the stretch before the first stop (a 5' end off the
    record), and the stretch after the last stop ends at the frame's last whole codon (a 3' end off it).
    (start, end, strand, partial) in the forward strand's coordinates, partial as Prodigal flags it."""
    out = set()
    n = len(seq)
    for strand, s, p in (("+", seq, prob), ("-", rc(seq), prob[::-1])):
        for frame in range(3):
            codons = range(frame, n - 2, 3)
            stretches = []  # (start codons as (position, is the edge), end, 3' end off the record)
            starts = [(frame, True)] if edges and codons and s[frame : frame + 3] not in stops | STARTS else []
            for i in codons:
                codon = s[i : i + 3]
                if codon in stops:
                    stretches.append((starts, i + 3, False))
                    starts = []
                elif codon in STARTS:
                    starts.append((i, False))
            if edges and codons:
                stretches.append((starts, codons[-1] + 3, True))
            for found, end, open_3 in stretches:
                best = None
                for a, virtual in found:
                    cost = 0.0 if virtual or s[a : a + 3] == "ATG" else penalty
                    gain = float(np.sum(p[a:end] - theta)) - cost
                    if best is None or gain > best[0] + 1e-9:
                        best = (gain, a, virtual)
                if best and best[0] > 1e-9 and end - best[1] >= min_length:
                    a, flag = best[1], ("1" if best[2] else "0") + ("1" if open_3 else "0")  # 5', 3' of this strand
                    out.add((a, end, "+", flag) if strand == "+" else (n - end, n - a, "-", flag[::-1]))
    return out


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(3, 1500), theta=st.sampled_from([0.2, 0.5]),
       min_length=st.sampled_from([3, 30, 90]), penalty=st.sampled_from([0.0, 3.0, 40.0]),
       table=st.sampled_from([11, 4]))
def test_candidates_equal_a_brute_force_enumeration(seed, n, theta, min_length, penalty, table):
    rng = np.random.default_rng(seed)
    seq = "".join(rng.choice(list("ACGT"), n))
    prob = rng.random(n).astype(np.float32)
    for edges in (False, True):
        got = {(g.start, g.end, g.strand, g.partial)
               for g in candidates(encode(seq), prob, theta, min_length, penalty, edges=edges, table=table)}
        stops = STOPS if table == 11 else STOPS - {"TGA"}  # table 4 reads TGA as tryptophan
        assert got == brute_force(seq, prob.astype(np.float64), theta, min_length, penalty, edges, stops)


def _gene(rng, codons: int) -> str:
    sense = [c for c in (a + b + d for a in "ACGT" for b in "ACGT" for d in "ACGT") if c not in STOPS]
    return "ATG" + "".join(rng.choice(sense, codons)) + "TAA"


def test_planted_genes_are_called_with_their_codons_on_both_strands():
    rng = np.random.default_rng(1)
    background = lambda k: "".join(rng.choice(list("ACGT"), k))  # noqa: E731
    plus, minus = _gene(rng, 200), _gene(rng, 150)
    seq = background(500) + plus + background(400) + rc(minus) + background(300)
    a, b = 500, 500 + len(plus)
    c, d = b + 400, b + 400 + len(minus)
    prob = np.full(len(seq), 0.1, np.float32)
    prob[a:b] = prob[c:d] = 0.9
    prob += rng.normal(0, 0.05, len(seq)).astype(np.float32)
    genes = call_genes(encode(seq), prob)
    assert [(g.start, g.end, g.strand) for g in genes] == [(a, b, "+"), (c, d, "-")]
    assert seq[a : a + 3] == "ATG" and seq[b - 3 : b] == "TAA" and rc(seq[c:d]).startswith("ATG")
    track = called_track(prob, genes)
    assert (track[a:b] > 0.5).all() and (track[:a] < 0.5).all() and (track[d:] < 0.5).all()
    # every start reaches the stop codon: there the start coverage is 1
    np.testing.assert_allclose(track[b - 3 : b], 0.75 + 0.25 * prob[b - 3 : b], rtol=1e-6)
    np.testing.assert_allclose(track[c : c + 3], 0.75 + 0.25 * prob[c : c + 3], rtol=1e-6)
    assert stop_matches([(g.start, g.end, g.strand) for g in genes], [(a, b, "+"), (c, d, "-"), (0, 9, "+")]) == \
        {"genes": 3, "calls": 2, "found": 2, "sensitivity": 2 / 3, "precision": 1.0}
    # the same genome read from the other strand gives the mirror image of the calls
    mirrored = call_genes(reverse_complement(encode(seq)), prob[::-1].copy())
    n = len(seq)
    assert [(n - g.end, n - g.start, "+" if g.strand == "-" else "-") for g in mirrored][::-1] == \
        [(g.start, g.end, g.strand) for g in genes]


def test_the_overlap_limit():
    """Flat evidence lights up every long ORF: with no overlap allowed no base is in two calls and the
    planted (longest, so best-scoring) gene stays; with no limit every candidate is kept."""
    rng = np.random.default_rng(2)
    one, two = _gene(rng, 300), _gene(rng, 120)
    seq = "C" * 30 + one + "C" * 10 + rc(two) + "C" * 30
    a, b = 30, 30 + len(one)
    prob = np.full(len(seq), 0.9, np.float32)
    tokens = encode(seq)
    tight = call_genes(tokens, prob, max_overlap=0, edges=False)  # poly-C has no stop: an edge gene would win
    spans = sorted((g.start, g.end) for g in tight)
    assert all(e1 <= s2 for (_, e1), (s2, _) in zip(spans, spans[1:], strict=False))
    assert (a, b, "+") in {(g.start, g.end, g.strand) for g in tight}
    loose = call_genes(tokens, prob, max_overlap=len(seq), edges=False, short_overlap=1.0)  # short genes too
    assert set(loose) == set(candidates(tokens, prob, edges=False)) and len(loose) > len(tight)


def test_n_never_makes_a_codon_and_nan_stays_unknown():
    seq = "ATG" + "GCT" * 100 + "TNA" + "GCT" * 10 + "TAA"  # TNA is no stop: the gene runs on to TAA
    prob = np.full(len(seq), 0.9, np.float32)
    prob[303:306] = np.nan
    (gene,) = call_genes(encode(seq), prob)
    assert (gene.start, gene.end, gene.strand) == (0, len(seq), "+")
    out = called_track(prob, [])
    assert np.isnan(out[303:306]).all() and out[0] == pytest.approx(0.45)
    inside = called_track(prob, [gene])
    assert np.isnan(inside[303:306]).all() and (inside[:303] > 0.5).all()  # unknown inside a call too


@pytest.mark.parametrize("strand", ["+", "-"])
def test_genes_cut_by_the_record_edges_are_called_partial(strand):
    """A contig cut through two genes, as a draft assembly's edges cut them: the gene whose start lies before
    the contig is called from the frame's first whole codon (its 5' end flagged partial), the gene whose stop
    lies after it ends at the frame's last whole codon (3' end flagged), in Prodigal's left-right notation;
    with closed ends (prodigal -c) no call touches an edge, and the gene between them is called the same."""
    rng = np.random.default_rng(4)
    head, middle, tail = _gene(rng, 200), _gene(rng, 150), _gene(rng, 180)
    cut_head, cut_tail = head[91:], tail[: len(tail) - 47]  # 91 bp of the first gene's 5' end lie before the contig
    seq = cut_head + "CTAGTTAGCTTAG" * 20 + middle + "CTAGTTAGCTTAG" * 20 + cut_tail
    prob = np.full(len(seq), 0.1, np.float32)
    mid = len(cut_head) + 260
    spans = {"head": (0, len(cut_head)), "middle": (mid, mid + len(middle)),
             "tail": (len(seq) - len(cut_tail), len(seq))}
    for a, b in spans.values():
        prob[a:b] = 0.9
    if strand == "-":
        seq, prob = rc(seq), prob[::-1].copy()
        spans = {k: (len(seq) - b, len(seq) - a) for k, (a, b) in spans.items()}
    got = {(g.start, g.end, g.partial) for g in call_genes(encode(seq), prob) if g.strand == strand}
    head_frame = len(cut_head) % 3  # the head's stop closes the frame whose first whole codon starts here
    tail_end = spans["tail"][0] + 3 * ((len(cut_tail)) // 3)
    if strand == "+":
        expected = {(head_frame, spans["head"][1], "10"), spans["middle"] + ("00",), (spans["tail"][0], tail_end, "01")}
    else:
        n = len(seq)
        expected = {(spans["tail"][1] - 3 * (len(cut_tail) // 3), spans["tail"][1], "10"), spans["middle"] + ("00",),
                    (spans["head"][0], n - head_frame, "01")}
    assert got == expected
    closed = {(g.start, g.end, g.partial) for g in call_genes(encode(seq), prob, edges=False) if g.strand == strand}
    assert spans["middle"] + ("00",) in closed and {flag for *_, flag in closed} == {"00"}
    assert not any(0 in (a, len(seq) - b) for a, b, _ in closed)  # the head's internal ATG at most, never an edge


@pytest.mark.parametrize("strand", ["+", "-"])
def test_genetic_code_4_reads_through_tga(strand):
    """A Mycoplasma-style gene with an in-frame TGA: the bacterial code (11) stops there, code 4 (prodigal -g 4)
    calls the whole gene, and its protein has tryptophan where the TGA is."""
    from swa_stream.tasks.dna.orfs import gene_bases, translate

    rng = np.random.default_rng(5)
    gene = _gene(rng, 240)
    gene = gene[:300] + "TGA" + gene[303:]  # codon 100 becomes TGA
    seq = "CTAGTTAGCTTAG" * 30 + gene + "CTAGTTAGCTTAG" * 30
    a, b = 390, 390 + len(gene)
    if strand == "-":
        seq, (a, b) = rc(seq), (len(seq) - b, len(seq) - a)
    prob = np.full(len(seq), 0.1, np.float32)
    prob[a:b] = 0.9
    calls = {t: [g for g in call_genes(encode(seq), prob, table=t) if g.strand == strand] for t in (11, 4)}
    assert (a, b) not in {(g.start, g.end) for g in calls[11]}
    (whole,) = [g for g in calls[4] if (g.start, g.end) == (a, b)]
    protein = translate(gene_bases(encode(seq), whole), table=4)
    assert protein[0] == "M" and protein[100] == "W" and protein.endswith("*") and protein.count("*") == 1
    with pytest.raises(ValueError, match="genetic code 5: not one of"):
        call_genes(encode(seq), prob, table=5)


def test_a_short_gene_needs_a_high_track():
    """A planted 210 bp gene (under the 250 bp minimum, over the 200 bp short one) is called where the track
    over it averages 0.8 or more, not at 0.7, and never without the short rule."""
    rng = np.random.default_rng(6)
    short = _gene(rng, 68)  # 3 + 204 + 3 = 210 bp
    spacer = "CTAGTTAGCTTAG" * 20
    seq = spacer + short + spacer
    a, b = len(spacer), len(spacer) + len(short)
    for level, called in ((0.85, True), (0.7, False)):
        prob = np.full(len(seq), 0.1, np.float32)
        prob[a:b] = level
        got = {(g.start, g.end) for g in call_genes(encode(seq), prob) if g.strand == "+"}
        assert ((a, b) in got) == called, level
        assert (a, b) not in {(g.start, g.end) for g in call_genes(encode(seq), prob, short_length=None)}


def test_a_track_of_another_length_is_refused():
    with pytest.raises(ValueError, match="10 bases but 9 track values"):
        candidates(encode("A" * 10), np.zeros(9, np.float32))


def test_a_rarer_start_needs_more_evidence():
    """An in-frame GTG 30 bp upstream of the ATG, under the same high track: evidence alone would start the
    gene at the GTG; the penalty keeps the ATG unless it is set to 0."""
    rng = np.random.default_rng(3)
    gene = _gene(rng, 150)
    seq = "C" * 40 + "GTG" + "GCT" * 9 + gene + "C" * 40
    prob = np.full(len(seq), 0.9, np.float32)
    atg = 40 + 3 + 27
    assert seq[atg : atg + 3] == "ATG"
    calls = lambda **kw: call_genes(encode(seq), prob, edges=False, **kw)  # noqa: E731 - poly-C runs to the edge
    (called,) = [g for g in calls() if g.strand == "+" and g.end == atg + len(gene)]
    assert called.start == atg
    (loose,) = [g for g in calls(alt_start_penalty=0.0) if g.end == atg + len(gene)]
    assert loose.start == 40


@pytest.mark.parametrize("strand", ["+", "-"])
def test_bases_only_a_farther_start_reaches_rank_by_that_starts_share(strand):
    """Two in-frame ATGs 30 bp apart under a flat track of 0.9: the farther start has 30 x (0.9 - 0.2) = 21
    more evidence, so with temperature T it has the share w = 1 / (1 + exp(-21 / T)). Its 30 bases are
    covered with w, the rest of the gene with 1, and the called track is 0.5 + p / 4 + coverage / 4."""
    body = "GCT" * 9 + "ATG" + "GCT" * 120 + "TAA"  # the second ATG 30 bp after the first
    gene = "ATG" + body
    seq = "C" * 40 + gene + "C" * 40
    if strand == "-":
        seq = rc(seq)
    prob = np.full(len(seq), 0.9, np.float32)
    (called,) = [g for g in call_genes(encode(seq), prob, edges=False) if g.strand == strand]  # poly-C: no edge
    assert (called.start, called.end) == (40, 40 + len(gene))
    for temperature in (10.0, 75.0):
        track = called_track(prob, [called], start_temperature=temperature)
        w = 1 / (1 + np.exp(-21 / temperature))
        far = slice(40, 70) if strand == "+" else slice(40 + len(gene) - 30, 40 + len(gene))
        near = slice(70, 40 + len(gene)) if strand == "+" else slice(40, 40 + len(gene) - 30)
        np.testing.assert_allclose(track[far], 0.5 + 0.225 + 0.25 * w, rtol=1e-6)
        np.testing.assert_allclose(track[near], 0.75 + 0.225, rtol=1e-6)
        np.testing.assert_allclose(track[:40], 0.45, rtol=1e-6)
