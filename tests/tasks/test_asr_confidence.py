"""Word confidences and the garbage word: the streaming decoder reports each word's confidence (the mean over
its characters of their best frame's probability), drops garbage (`*`) words and words under the threshold,
and the offline decoder drops garbage words the same way. "oh" scores as zero."""

import math

import pytest
import torch

from swa_stream.tasks.asr.decoder import CTCDecoder, EndpointConfig, greedy_decode
from swa_stream.tasks.asr.text import GARBAGE, VOCABULARY, digits_text, encode, normalize


def frames_for(words_probs, blank_between=2):
    """(T, V) log-probs: each word's characters as one-frame spikes of the given probability (the rest of the
    mass on the blank), words separated by a space spike; prob None = a spike of probability 1."""
    rows = []
    for k, (word, prob) in enumerate(words_probs):
        if k:
            rows.append((VOCABULARY.index(" "), 1.0))
        for c in encode(word):
            rows += [(c, prob)] + [(0, 1.0)] * blank_between
    rows += [(0, 1.0)] * 3
    lp = torch.full((len(rows), len(VOCABULARY)), 1e-6).log()
    for f, (label, p) in enumerate(rows):
        lp[f, label] = math.log(p)
        if p < 1.0:
            lp[f, 0] = math.log(1.0 - p - 1e-6 * len(VOCABULARY))
    return lp


def decode(lp, **kwargs):
    decoder = CTCDecoder(VOCABULARY, 25.0, EndpointConfig(None, None, None), **kwargs)
    segs, state = decoder.step(lp, decoder.init_state())
    return segs + decoder.flush(state)


def test_words_carry_their_confidence_in_jsonl_form():
    (seg,) = decode(frames_for([("four", 0.9), ("two", 0.7)]), min_confidence=0.0)
    assert [w.word for w in seg.words] == ["four", "two"]
    assert [w.conf for w in seg.words] == pytest.approx([0.9, 0.7], abs=1e-4)
    assert [w["conf"] for w in seg.to_dict()["words"]] == pytest.approx([0.9, 0.7], abs=1e-3)


def test_a_character_run_counts_its_best_frame():
    lp = frames_for([("a", 0.4)], blank_between=0)
    lp = torch.cat([lp[:1], frames_for([("a", 0.8)], blank_between=0)[:1], lp[1:]])  # "a" at 0.4 then 0.8
    (seg,) = decode(lp, min_confidence=0.0)
    assert seg.text == "a" and seg.words[0].conf == pytest.approx(0.8, abs=1e-4)


def test_low_confidence_and_garbage_words_are_dropped():
    lp = frames_for([("nine", 0.95), (GARBAGE, 0.99), ("eight", 0.3), ("one", 0.8)])
    (seg,) = decode(lp, min_confidence=0.5)
    assert seg.text == "nine one"
    assert decode(frames_for([(GARBAGE, 1.0), (GARBAGE, 1.0)])) == []  # non-digit speech: nothing at all


def test_offline_decoding_drops_garbage_words():
    lp = frames_for([("six", 1.0), (GARBAGE, 1.0), ("two", 1.0)])
    assert greedy_decode(lp[None], torch.tensor([lp.shape[0]]), VOCABULARY) == ["six two"]


def test_garbage_is_a_word_of_its_own_and_oh_scores_as_zero():
    assert normalize("hello*world") == "hello * world"
    assert digits_text("Two oh six *") == "two zero six"
    assert encode("*") == [VOCABULARY.index(GARBAGE)]
