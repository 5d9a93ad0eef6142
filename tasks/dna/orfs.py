"""Gene calls from a coding track: the open reading frames that the track covers best.

A per-position track ("P(inside a protein-coding gene)") knows nothing of codons, so on its own it blurs
gene ends and lights up stretches no gene could fill. A bacterial gene is an open reading frame: a start
codon (ATG, GTG, TTG), whole codons, and the frame's next stop (TAA, TAG, TGA), on either strand. This
module turns a track into gene calls that respect that:

1. Candidates: on each of the six frames, every stop-to-stop stretch gets the start codon that maximises
   the sum of (p - `theta`) from the start to the stop (the track's evidence against a baseline), less
   `alt_start_penalty` for a GTG or TTG start (most bacterial genes start with ATG: the rarer starts need
   more evidence, about 50 coding bases' worth); stretches shorter than `min_length` bp, or with no
   positive sum, give no candidate.
2. Calls: candidates in order of that sum, each kept unless it overlaps the genes already kept by more than
   `max_overlap` bp (bacterial genes overlap a little, rarely more).
3. A called track, for per-position use. Outside calls it is the track halved; inside a call it is 0.5 plus
   a quarter of the track plus a quarter of the base's start coverage: the probability that the gene
   reaches this base, under a softmax (temperature `start_temperature`) over the stretch's start codons
   by their evidence. So 0.5 separates "in a called gene" from "not"; near the stop every start covers a
   base, and bases that only the farther starts reach rank lower, as a start is the least certain part of
   a call. On the validation genome this ranks bases better than the track alone inside calls (AUROC 0.9877
   to 0.9923 on chromosome 1, 0.9707 to 0.9843 on chromosome 2; temperature 50-100 on a plateau) or a
   call's mean (0.979 on chromosome 1).

The defaults were chosen on the validation genome (V. cholerae O395 against pyrodigal's calls; see
docs/dna.md): theta 0.1-0.3 and min_length 250 sit on a plateau of per-position accuracy near 97%, and a
GTG/TTG penalty of 20-80 on another (97.4%, against 96.9% with none and 96.7% with ATG starts only).
Memory is about 23 bytes per base of the record at peak for the calls (tracemalloc, 4.6 Mbp: the running
sum, the codon table and its flags) and 13 for the called track; time about a second for a 5 Mbp bacterial
genome (E. coli K-12: 0.8 s for the calls, 0.1 s for the called track, one thread).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

THETA, MIN_LENGTH, MAX_OVERLAP, ALT_START_PENALTY, START_TEMPERATURE = 0.2, 250, 100, 40.0, 75.0
# Genes of SHORT_LENGTH to MIN_LENGTH bp are called only where the track's mean over them is SHORT_MEAN or
# more and they overlap the genes already kept by at most SHORT_OVERLAP of their length (chosen on the
# validation genome: docs/dna.md, "Short genes")
SHORT_LENGTH, SHORT_MEAN, SHORT_OVERLAP = 200, 0.8, 0.1
_BASE = {"A": 0, "C": 1, "G": 2, "T": 3}


def _codes(codons: tuple[str, ...]) -> list[int]:
    return [_BASE[a] * 16 + _BASE[b] * 4 + _BASE[c] for a, b, c in codons]


def _reverse_complement(codon: str) -> str:
    return codon[::-1].translate(str.maketrans("ACGT", "TGCA"))


STARTS = ("ATG", "GTG", "TTG")
# The genetic codes a bacterial gene finder is asked for (Prodigal's -g): their stop codons. Table 11 is the
# bacterial code; in table 4 (Mycoplasma, Spiroplasma) TGA is tryptophan, in table 25 (SR1, Gracilibacteria)
# glycine, so genes read through it.
STOPS = {11: ("TAA", "TAG", "TGA"), 4: ("TAA", "TAG"), 25: ("TAA", "TAG")}
_START_F = _codes(STARTS)
# the same codons read on the other strand, as they appear on this one (reverse complements)
_START_R = _codes(tuple(map(_reverse_complement, STARTS)))
ALT_STARTS = ("GTG", "TTG")  # the rarer starts
_ALT_F, _ALT_R = _codes(ALT_STARTS), _codes(tuple(map(_reverse_complement, ALT_STARTS)))


def _stops(table: int) -> tuple[list[int], list[int]]:
    """The stop codons of genetic code `table`, on this strand and as the other strand's read on this one."""
    if table not in STOPS:
        raise ValueError(f"genetic code {table}: not one of {sorted(STOPS)}")
    return _codes(STOPS[table]), _codes(tuple(map(_reverse_complement, STOPS[table])))


@dataclass(frozen=True)
class Gene:
    """A called gene: bases [start, end) of the record (0-based, end exclusive), stop codon included."""

    start: int
    end: int
    strand: str  # "+" or "-"
    mean: float  # the track's mean over the gene
    score: float  # sum of (p - theta) over the gene, less a rarer start's penalty: what ranked it
    # every start codon of the stretch, as the 5' end it would give the gene (start for "+", end for "-"),
    # and its score as above; empty: the call's own start only
    five_primes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), compare=False, repr=False)
    start_scores: np.ndarray = field(default_factory=lambda: np.zeros(0), compare=False, repr=False)
    # Prodigal's partial flag, left end then right end of the record's strand: "1" where the gene runs off
    # the record (no start codon, or no stop codon, there); "00" a complete gene
    partial: str = "00"


def codon_table(tokens: np.ndarray) -> np.ndarray:
    """int16 (T,): the codon starting at each base (0-63), -1 where it runs off the end or holds a non-ACGT."""
    t = tokens.astype(np.int16)
    codes = np.full(len(t), -1, np.int16)
    if len(t) >= 3:
        codes[:-2] = t[:-2] * 16 + t[1:-1] * 4 + t[2:]
        bad = (t > 3).astype(np.int8)
        bad = bad[:-2] | bad[1:-1] | bad[2:]
        codes[:-2][bad.astype(bool)] = -1
    return codes


def candidates(tokens: np.ndarray, prob: np.ndarray, theta: float = THETA, min_length: int = MIN_LENGTH,
               alt_start_penalty: float = ALT_START_PENALTY, edges: bool = True, table: int = 11,
               short_length: int | None = SHORT_LENGTH, short_mean: float = SHORT_MEAN) -> list[Gene]:
    """Every stop-to-stop stretch's best gene on the six frames (step 1 of the module docstring), the stops
    those of genetic code `table` (11, 4 or 25). With
    `edges` (Prodigal's default; its -c turns it off), a stretch may also run off an end of the record: the
    frame's first whole codon is then one more start, with no penalty, for a gene whose 5' end lies before
    the record, and a stretch with no stop before the record's end ends at the frame's last whole codon, as
    a draft assembly's contig edges cut genes."""
    if len(tokens) != len(prob):
        raise ValueError(f"candidates: {len(tokens)} bases but {len(prob)} track values")
    codes = codon_table(tokens)
    n = len(tokens)
    # sum over [a, b) of (p - theta) = evidence[b] - evidence[a]; an N base counts as p = 0, whether or not
    # the track has masked it to NaN, so every caller agrees
    shifted = np.nan_to_num(prob.astype(np.float64), nan=0.0)
    shifted[tokens > 3] = 0.0
    shifted -= theta
    evidence = np.zeros(n + 1)
    np.cumsum(shifted, out=evidence[1:])
    del shifted
    stop_f, stop_r = _stops(table)
    is_start_f, is_stop_f = np.isin(codes, _START_F), np.isin(codes, stop_f)
    is_start_r, is_stop_r = np.isin(codes, _START_R), np.isin(codes, stop_r)
    out: list[Gene] = []

    def best(lo, hi, strand, five, gain, open_end: str, virtual) -> None:
        """Keep the stretch's best start: `five` the 5' ends, `gain` their scores; `open_end` the partial flag
        of a stretch whose 3' end lies off the record ("" if it has its stop); `virtual` the 5' end that is
        the record's edge, if the stretch has one."""
        if not len(five):
            return
        k = int(np.argmax(gain))
        a, b = (five[k], hi) if strand == "+" else (lo, five[k])
        if gain[k] <= 0 or b - a < min(min_length, short_length or min_length):
            return
        mean = (evidence[b] - evidence[a]) / (b - a) + theta
        if b - a < min_length and mean < short_mean:  # a short gene needs a higher track throughout
            return
        edge = open_end or "00"
        if virtual is not None and five[k] == virtual:  # the 5' end is the record's edge
            edge = ("1" + edge[1]) if strand == "+" else (edge[0] + "1")
        out.append(Gene(int(a), int(b), strand, float(mean), float(gain[k]), five, gain, edge))

    for frame in range(3):
        pos = np.arange(frame, n - 2, 3)
        if not len(pos):
            continue
        last_end = int(pos[-1]) + 3  # the end of the frame's last whole codon
        right_edge_free = not (is_start_r[last_end - 3] or is_stop_r[last_end - 3])  # may a - gene start there?
        # + strand: a gene runs from a start codon to the frame's next stop, stop included
        stops, starts = pos[is_stop_f[pos]], pos[is_start_f[pos]]
        penalty = np.where(np.isin(codes[starts], _ALT_F), alt_start_penalty, 0.0)  # per start codon
        lows = np.concatenate([[frame], stops + 3])[: len(stops)]  # each stretch begins after the stop before it
        bounds = [(int(lo), int(stop) + 3, "") for lo, stop in zip(lows, stops, strict=True)]  # (lo, hi, open end)
        if edges and (not len(stops) or stops[-1] + 3 < last_end):  # the last stretch runs off the end
            bounds.append((frame if not len(stops) else int(stops[-1]) + 3, last_end, "01"))
        for number, (lo, hi, open_end) in enumerate(bounds):
            a, b = np.searchsorted(starts, lo), np.searchsorted(starts, hi - 2)
            five, cost = starts[a:b], penalty[a:b]
            virtual = lo if edges and number == 0 and not (is_start_f[lo] or is_stop_f[lo]) else None
            if virtual is not None:
                five, cost = np.concatenate([[lo], five]), np.concatenate([[0.0], cost])
            best(lo, hi, "+", five, evidence[hi] - evidence[five] - cost, open_end, virtual)
        # - strand: read right to left, so the stop comes first here and the start codon at the right end
        stops, starts = pos[is_stop_r[pos]], pos[is_start_r[pos]]
        penalty = np.where(np.isin(codes[starts], _ALT_R), alt_start_penalty, 0.0)
        rights = np.concatenate([stops[1:], [n]])[: len(stops)]  # each stretch ends before the next stop
        bounds = [(int(stop), int(right), "") for stop, right in zip(stops, rights, strict=True)]
        if edges and (not len(stops) or stops[0] > frame):  # the first stretch's 3' end lies before the record
            bounds.insert(0, (frame, int(stops[0]) if len(stops) else n, "10"))
        for number, (lo, right, open_end) in enumerate(bounds):
            a, b = np.searchsorted(starts, lo + (0 if open_end else 3)), np.searchsorted(starts, right)
            five, cost = starts[a:b] + 3, penalty[a:b]
            at_end = number == len(bounds) - 1 and right == n
            virtual = last_end if edges and at_end and right_edge_free else None
            if virtual is not None:
                five, cost = np.concatenate([five, [last_end]]), np.concatenate([cost, [0.0]])
            best(lo, None, "-", five, evidence[five] - evidence[lo] - cost, open_end, virtual)
    return out


def call_genes(tokens: np.ndarray, prob: np.ndarray, theta: float = THETA, min_length: int = MIN_LENGTH,
               max_overlap: int = MAX_OVERLAP, alt_start_penalty: float = ALT_START_PENALTY,
               edges: bool = True, table: int = 11, short_length: int | None = SHORT_LENGTH,
               short_mean: float = SHORT_MEAN, short_overlap: float = SHORT_OVERLAP) -> list[Gene]:
    """Gene calls (steps 1 and 2), sorted by start; `edges`: genes may run off the record's ends; `table`: the
    genetic code, whose stops end genes."""
    cands = candidates(tokens, prob, theta, min_length, alt_start_penalty, edges, table, short_length, short_mean)
    covered = np.zeros(len(tokens), bool)
    kept = []
    for gene in sorted(cands, key=lambda g: -g.score):
        length = gene.end - gene.start
        limit = max_overlap if length >= min_length else min(max_overlap, short_overlap * length)
        if np.count_nonzero(covered[gene.start : gene.end]) > limit:
            continue
        covered[gene.start : gene.end] = True
        kept.append(gene)
    return sorted(kept, key=lambda g: (g.start, g.end))


def gene_bases(tokens: np.ndarray, gene: Gene) -> str:
    """The gene's bases 5' to 3' on its own strand, start codon to stop codon (A, C, G, T; N where the record
    had N or an IUPAC code)."""
    from swa_stream.tasks.dna.tokenizer import decode, reverse_complement

    piece = tokens[gene.start : gene.end]
    if gene.strand == "-":
        piece = reverse_complement(piece)
    return decode(piece)


def translate(bases: str, start: bool = True, table: int = 11) -> str:
    """A called gene's protein, as Prodigal writes it: genetic code `table` (NCBI's numbering; 11 the
    bacterial code), the start codon read as M whichever it is (GTG and TTG start a protein with methionine
    too; `start=False` for a gene whose 5' end lies off the record, which has no start codon), and the stop
    as a final "*" (none where the 3' end lies off the record)."""
    from Bio.Seq import Seq

    protein = str(Seq(bases).translate(table=table))
    return "M" + protein[1:] if protein and start else protein


def called_track(prob: np.ndarray, genes: list[Gene], start_temperature: float = START_TEMPERATURE) -> np.ndarray:
    """float32 (T,): step 3 of the module docstring. NaN (N bases) stays NaN, inside calls too: an N is
    unknown, as in every track."""
    n = len(prob)
    inside = np.zeros(n, bool)
    reach = np.zeros(n + 1)  # start coverage, as differences: +w where a start's gene begins, -w where it ends
    for g in genes:
        inside[g.start : g.end] = True
        fives, scores = g.five_primes, g.start_scores
        if len(fives) == 0:
            fives, scores = np.array([g.start if g.strand == "+" else g.end]), np.zeros(1)
        w = np.exp((scores - scores.max()) / start_temperature)
        w /= w.sum()
        lo, hi = (fives, np.full(len(fives), g.end)) if g.strand == "+" else (np.full(len(fives), g.start), fives)
        np.add.at(reach, lo, w)
        np.add.at(reach, hi, -w)
    np.cumsum(reach, out=reach)
    np.clip(reach, 0.0, 1.0, out=reach)  # overlapping calls add up: a base is covered at most once
    called = reach[:n].astype(np.float32)  # in place from here on: the track's arrays are the memory
    del reach
    called *= 0.25
    called += 0.5
    called += 0.25 * prob
    half = (0.5 * prob).astype(np.float32)
    return np.where(inside, called, half)


def stop_matches(calls: list[tuple[int, int, str]], truth: list[tuple[int, int, str]]) -> dict:
    """Gene-level agreement by 3' end, the usual yardstick for gene finders (a start is often ambiguous, the
    stop never is): a true gene is found when a call on its strand ends at its stop codon. Both lists are
    (start, end, strand) half-open intervals; genes with strand "." are left out."""
    def ends(genes):
        return {(e if s == "+" else b, s) for b, e, s in genes if s in "+-"}

    found, called = ends(truth), ends(calls)
    hits = len(found & called)
    return {"genes": len(found), "calls": len(called), "found": hits,
            "sensitivity": hits / max(1, len(found)), "precision": hits / max(1, len(called))}
