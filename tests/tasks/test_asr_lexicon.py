"""The closed-vocabulary decoder: a word the greedy path misspells ("fovre") becomes the lexicon word with the
highest CTC probability on its own frames, garbage wins are dropped, words the lexicon has are untouched, and
the result does not depend on how the frames are chunked or on the neighbouring words."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swa_stream.errors import ConfigError
from swa_stream.tasks.asr.decoder import CTCDecoder, EndpointConfig
from swa_stream.tasks.asr.schema import ASRSchema
from swa_stream.tasks.asr.text import GARBAGE, VOCABULARY

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "oh"]
V = len(VOCABULARY)


def frames(*spec):
    """(T, V) log-probs from frames given as {label: probability} (the rest of the mass spread thinly)."""
    rows = []
    for probs in spec:
        row = torch.full((V,), 1e-4)
        for char, p in probs.items():
            row[VOCABULARY.index(char) if char != "_" else 0] = p
        rows.append((row / row.sum()).log())
    return torch.stack(rows)


BLANK, SPACE = {"_": 1.0}, {" ": 1.0}
# "fovre" on the greedy path; "five" holds the second-best mass where the path leaves it
FOVRE = [{"f": 0.9}, BLANK, {"o": 0.5, "i": 0.45}, BLANK, {"v": 0.9}, {"r": 0.5, "_": 0.45}, {"e": 0.9}, BLANK]


def run(lp, lexicon=DIGITS, chunks=None, endpoint=None, min_confidence=0.0):
    decoder = CTCDecoder(VOCABULARY, 25.0, endpoint or EndpointConfig(None, None, None),
                         min_confidence=min_confidence, lexicon=lexicon)
    state, segs = decoder.init_state(), []
    for part in (lp.split(chunks) if chunks else [lp]):
        out, state = decoder.step(part, state)
        segs += out
    return segs + decoder.flush(state)


def words(segs):
    return [(w.word, w.start, w.end, round(w.conf, 6)) for s in segs for w in s.words]


def test_a_misspelt_word_becomes_the_lexicon_word_that_fits_its_frames():
    lp = frames(BLANK, *FOVRE, BLANK)
    assert [w[0] for w in words(run(lp, lexicon=None))] == ["fovre"]
    (seg,) = run(lp)
    assert seg.text == "five"
    # its time span and confidence are those of what was heard (the greedy characters)
    assert words(run(lp)) == [("five", *words(run(lp, lexicon=None))[0][1:])]


def test_lexicon_words_stay_as_spelled_and_garbage_wins_are_dropped():
    two = [{"t": 0.9}, BLANK, {"w": 0.9}, {"o": 0.9}, BLANK]
    assert run(frames(*two))[0].text == "two"
    junk = [{"x": 0.55, GARBAGE: 0.44}, BLANK, BLANK]  # spelled "x", but only garbage has mass there
    assert run(frames(*two, SPACE, *junk), lexicon=None)[0].text == "two x"
    assert run(frames(*two, SPACE, *junk))[0].text == "two"


def test_the_rescored_frames_stop_at_the_neighbouring_words():
    """The word between two others scores the same whatever they are: its frames end at the spaces."""
    nine = [{"n": 0.9}, {"i": 0.9}, {"n": 0.9, "_": 0.05}, BLANK, {"e": 0.9}]  # "nine": n, i, n (new run), e
    seven = [{"s": 0.9}, {"e": 0.9}, {"v": 0.9}, {"e": 0.9}, {"n": 0.9}]
    a = words(run(frames(*nine, SPACE, *FOVRE, SPACE, *nine)))
    b = words(run(frames(*seven, SPACE, *FOVRE, SPACE, *seven)))
    assert a[1] == b[1] and a[1][0] == "five"
    assert [w[0] for w in a] == ["nine", "five", "nine"] and [w[0] for w in b] == ["seven", "five", "seven"]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), cuts=st.lists(st.integers(1, 30), min_size=1, max_size=12),
       endpoint=st.booleans())
def test_any_chunking_gives_the_same_words(seed, cuts, endpoint):
    """Random peaky frames (many misspellings, spaces and blanks) decode to the same words in one step or in
    chunks of any sizes, with and without endpointing."""
    g = torch.Generator().manual_seed(seed)
    n = 160
    logits = torch.randn(n, V, generator=g) * 3
    logits[:, 0] += 2.5  # mostly blank, as CTC is
    logits[:, VOCABULARY.index(" ")] += 0.5
    lp = logits.log_softmax(-1)
    sizes, total, k = [], 0, 0
    while total < n:
        sizes.append(min(cuts[k % len(cuts)], n - total))
        total, k = total + sizes[-1], k + 1
    rules = EndpointConfig(0.4, 0.3, 3.0) if endpoint else None
    whole = run(lp, endpoint=rules, min_confidence=0.3)
    assert [s.to_dict() for s in run(lp, chunks=sizes, endpoint=rules, min_confidence=0.3)] == \
        [s.to_dict() for s in whole]
    assert all(w.word in DIGITS for s in whole for w in s.words)


def test_the_decoder_state_stays_small_between_words():
    decoder = CTCDecoder(VOCABULARY, 25.0, lexicon=DIGITS)
    _, state = decoder.step(frames(*([BLANK] * 500)), decoder.init_state())
    assert len(state.recent) <= 3


def test_bundles_carry_their_lexicon_and_refuse_a_bad_one(tmp_path):
    schema = ASRSchema()
    config = {"frontend": {"d_model": 16}, "encoder": {"d_model": 16, "n_heads": 2, "n_layers": 1, "window": [4, 0],
              "frame_rate": 25.0, "frame_unit": "s"}, "labels": VOCABULARY, "lexicon": DIGITS}
    model = schema.build(config)
    assert model.lexicon == DIGITS and model.config()["lexicon"] == DIGITS
    assert CTCDecoder.for_model(model).lexicon == DIGITS
    assert CTCDecoder.for_model(model, open_vocabulary=True).lexicon is None
    assert "lexicon" not in schema.build({**config, "lexicon": None}).config()
    for bad, says in ((["Five"], "'Five'"), (["two words"], "'two words'"), (["six", "six"], "twice"),
                      ([], "non-empty"), (["é"], "'é'"), ([GARBAGE], "'*'")):
        with pytest.raises(ConfigError, match=f"lexicon: .*{says}"):
            schema.build({**config, "lexicon": bad})



@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), space_frames=st.integers(2, 4))
def test_a_longer_space_does_not_change_the_next_words_rescoring(seed, space_frames):
    """The frames of a space, however many, belong to no word: a misspelt word snaps alike after a space of
    one frame or of several (the space's leftover mass on letters must not count)."""
    g = torch.Generator().manual_seed(seed)
    word = torch.randn(6, V, generator=g) * 3
    word[:, 0] += 1.0
    word[:, VOCABULARY.index(" ")] = -20.0  # no space inside the word
    letter = VOCABULARY.index("q")  # a spelling no lexicon word has
    word[2], word[2, letter] = word[2] - 10, 10.0
    word = word.log_softmax(-1)
    space = torch.full((V,), -6.0)
    space[VOCABULARY.index(" ")] = 2.0
    space = space.log_softmax(-1)
    two = frames({"t": 0.9}, BLANK, {"w": 0.9}, {"o": 0.9}, BLANK)
    one_space = run(torch.cat([two, space[None], word]))
    more = run(torch.cat([two, space[None].expand(space_frames, V), word]))
    assert [w.word for s in one_space for w in s.words] == [w.word for s in more for w in s.words]


def test_the_state_holds_its_own_copy_and_stays_bounded():
    decoder = CTCDecoder(VOCABULARY, 25.0, lexicon=DIGITS)
    lp = frames(BLANK, *FOVRE)
    _, state = decoder.step(lp, decoder.init_state())
    lp.fill_(0.0)  # the caller reuses its buffer
    assert [s.text for s in decoder.flush(state)] == ["five"]
    _, state = decoder.step(frames({"f": 0.9}, *([BLANK] * 2000)), decoder.init_state())  # a word left open
    assert len(state.recent) <= 500


def test_without_a_garbage_label_a_word_too_short_for_every_candidate_is_dropped():
    labels = [label for label in VOCABULARY if label != GARBAGE]
    decoder = CTCDecoder(labels, 25.0, EndpointConfig(None, None, None), min_confidence=0.0, lexicon=DIGITS)
    q = torch.full((1, len(labels)), -20.0)
    q[0, labels.index("q")] = 0.0
    segs, state = decoder.step(torch.cat([frames(*[{"t": 0.9}, {"w": 0.9}, {"o": 0.9}, BLANK, SPACE])[:, :len(labels)],
                                          q, frames(SPACE)[:, :len(labels)]]), decoder.init_state())
    assert [w.word for s in segs + decoder.flush(state) for w in s.words] == ["two"]
