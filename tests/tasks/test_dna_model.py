"""The DNA model streams exactly, and reverse-complement averaging is symmetric."""

import threading

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swa_stream import SWAConfig
from swa_stream.tasks.dna.model import DNAModel, score_record, stream_record, stream_strands
from swa_stream.tasks.dna.tokenizer import reverse_complement


@pytest.fixture(scope="module", params=[(0, False), (5, False), (5, True)],
                ids=["no-stem", "conv-stem-5", "stem-absolute-positions"])
def model(request):
    """With absolute positions, records of 60 bp: the tests' records of up to 150 bp also cover the bases
    past record_length, which share the last position's vector."""
    torch.manual_seed(0)
    cfg = SWAConfig(d_model=16, n_heads=2, n_layers=2, window=(6, 6))
    stem, absolute = request.param
    model = DNAModel(cfg, ["a", "b", "c"], stem_kernel=stem, record_length=60 if absolute else None,
                     absolute_positions=absolute).eval()
    if absolute:
        with torch.no_grad():
            model.positions.weight.mul_(5.0)  # loud enough that a misplaced position would show
    return model


@settings(deadline=None, max_examples=15)
@given(length=st.integers(0, 150), chunk=st.integers(1, 200), seed=st.integers(0, 10**6))
def test_streamed_scores_and_tracks_equal_offline(model, length, chunk, seed):
    tokens = np.random.default_rng(seed).integers(0, 5, size=length).astype(np.uint8)
    with torch.no_grad():
        logits, tracks = model(torch.from_numpy(tokens.astype(np.int64))[None])
    got = []
    probs = stream_record(model, tokens, chunk, lambda start, p: got.append((start, p)))
    np.testing.assert_allclose(probs.numpy(), logits[0].softmax(-1).numpy(), atol=1e-5)
    if length:
        assert [s for s, _ in got] == list(np.cumsum([0] + [len(p) for _, p in got[:-1]]))
        np.testing.assert_allclose(np.concatenate([p for _, p in got]), torch.sigmoid(tracks[0]).numpy(), atol=1e-5)


@settings(deadline=None, max_examples=10)
@given(length=st.integers(0, 150), chunk=st.integers(1, 200), seed=st.integers(0, 10**6))
def test_both_strands_on_two_threads_deliver_what_one_two_row_stream_does(model, length, chunk, seed):
    """With two torch threads, stream_strands steps each strand as a stream of its own on a thread of its own
    (each single-threaded); with one, both as the two rows of one stream. Both deliver the offline tracks of
    the record and its reverse complement, in the same order, with the same class scores, and the caller's
    thread count and grad mode are as they were."""
    tokens = np.random.default_rng(seed).integers(0, 5, size=length).astype(np.uint8)
    with torch.no_grad():
        offline = [model(torch.from_numpy(t.astype(np.int64))[None]) for t in (tokens, reverse_complement(tokens))]
    threads, runs = torch.get_num_threads(), {}
    step = model.step
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            got, callers = [], set()
            model.step = lambda *a, _callers=callers: (_callers.add(threading.get_ident()), step(*a))[1]
            probs = stream_strands(model, tokens, chunk,
                                   lambda start, p, strand, _got=got: _got.append((strand, start, p)))
            assert torch.get_num_threads() == n and torch.is_grad_enabled()
            assert len(callers) == (n if length else 0)  # an empty record takes no step
            runs[n] = got
            for row, (logits, tracks) in enumerate(offline):
                np.testing.assert_allclose(probs[row].numpy(), logits[0].softmax(-1).numpy(), atol=1e-5)
                if length:
                    mine = np.concatenate([p for s, _, p in got if s == (1, -1)[row]])
                    np.testing.assert_allclose(mine, torch.sigmoid(tracks[0]).numpy(), atol=1e-5)
    finally:
        del model.step
        torch.set_num_threads(threads)
    assert [(s, start, len(p)) for s, start, p in runs[1]] == [(s, start, len(p)) for s, start, p in runs[2]]


def test_reverse_complement_average_is_symmetric(model):
    tokens = np.random.default_rng(1).integers(0, 5, size=97).astype(np.uint8)
    a = score_record(model, tokens, 16, rc_average=True)
    b = score_record(model, reverse_complement(tokens), 40, rc_average=True)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert not np.allclose(score_record(model, tokens, 16), score_record(model, reverse_complement(tokens), 16))


def test_padded_batch_equals_each_record_alone(model):
    rng = np.random.default_rng(2)
    seqs = [rng.integers(0, 5, size=n) for n in (40, 7, 23)]
    tokens = torch.full((3, 40), 4, dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = torch.from_numpy(s)
    with torch.no_grad():
        batch_logits, _ = model(tokens, torch.tensor([40, 7, 23]))
        for i, s in enumerate(seqs):
            alone, _ = model(torch.from_numpy(s)[None])
            torch.testing.assert_close(batch_logits[i], alone[0], rtol=0, atol=1e-5)


@settings(deadline=None, max_examples=5)
@given(data=st.data())
def test_records_of_a_ragged_batch_each_get_their_own_scores_and_tracks(model, data, ragged, chunks):
    """Records with their own lengths, chunkings (zeros included) and start offsets join and leave one batch."""
    n = data.draw(st.integers(2, 3))
    xs = [torch.randint(0, 5, (data.draw(st.integers(1, 60)),)) for _ in range(n)]
    chunkings = [chunks(data.draw, len(x), [7, 0, 1, 3, 25, 80]) for x in xs]
    joins = [data.draw(st.integers(0, 3)) for _ in range(n)]
    starts = [data.draw(st.sampled_from([0, 12, 10**9])) for _ in range(n)]
    classes = {}
    with torch.no_grad():
        outs = ragged(model, xs, chunkings, joins, init=lambda s: model.init_state(1, start_position=starts[s]),
                      pad=torch.zeros_like, on_flush=lambda s, rest: classes.update({s: rest[0]}))
        for s, (x, out) in enumerate(zip(xs, outs, strict=True)):
            logits, tracks = model(x[None])
            torch.testing.assert_close(out, tracks[0], rtol=0, atol=1e-5)
            torch.testing.assert_close(classes[s], logits[0], rtol=0, atol=1e-5)
