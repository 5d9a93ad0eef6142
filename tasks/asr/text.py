"""Characters for CTC: the vocabulary, text normalisation, and encode / decode.

The vocabulary is `<blank>` (index 0, CTC's blank), a space, `a` .. `z`, the apostrophe and `*`: 30 labels.
`*` is the garbage (filler) word: training transcripts write it for every word that is not in the task's
vocabulary (non-digit speech for the digit demo), so the model has somewhere to put speech it should not
transcribe, and the decoders drop it from text. Bundles made before it existed have 29 labels and still load.
Transcripts are normalised before encoding so that "Three-Four!" and "three four" train the same targets.
"""

from __future__ import annotations

import re
import string
import unicodedata

BLANK = "<blank>"
GARBAGE = "*"
VOCABULARY: list[str] = [BLANK, " ", *string.ascii_lowercase, "'", GARBAGE]

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u00b4": "'"})
_NOT_IN_VOCAB = re.compile(r"[^a-z'* ]+")
# Spoken forms that mean a digit word: "oh" is how people say zero inside digit strings.
SYNONYMS = {"oh": "zero"}


def normalize(text: str) -> str:
    """Lower-case, strip accents, turn every other symbol (hyphens, digits, punctuation) into a word break,
    and keep single spaces between words: "Déjà-vu, it's 3!" -> "deja vu it's". `*` (the garbage word)
    stays, as a word of its own."""
    text = unicodedata.normalize("NFKD", text.translate(_APOSTROPHES)).encode("ascii", "ignore").decode("ascii")
    text = _NOT_IN_VOCAB.sub(" ", text.lower())
    text = text.replace(GARBAGE, f" {GARBAGE} ")
    words = (w.strip("'") for w in text.split())  # quotes around a word are not apostrophes
    return " ".join(w for w in words if w)


def digits_text(text: str) -> str:
    """A transcript as a digit string's words: normalised, synonyms ("oh") mapped, garbage words dropped.
    Scoring uses this on both sides, so "two oh six" and "two zero six" are the same answer."""
    words = (SYNONYMS.get(w, w) for w in normalize(text).split())
    return " ".join(w for w in words if w != GARBAGE)


def check_labels(labels: list[str]) -> list[str]:
    """A CTC label list: index 0 is the blank, the rest are distinct single characters, one a space."""
    labels = list(labels)
    if len(labels) < 3 or labels[0] != BLANK:
        raise ValueError(f"labels: index 0 must be {BLANK!r} followed by the characters, got {labels[:4]!r}")
    chars = labels[1:]
    if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars) or " " not in chars:
        raise ValueError("labels: after the blank, distinct single characters including a space are required")
    return labels


def check_lexicon(words, labels: list[str]) -> list[str]:
    """A closed vocabulary for decoding: distinct normalised single words, each spelled with `labels`."""
    words = [str(w) for w in words] if isinstance(words, (list, tuple)) else None
    if not words:
        raise ValueError("lexicon: a non-empty list of words is required")
    chars = set(labels[1:]) - {" ", GARBAGE}
    for w in words:
        if normalize(w) != w or " " in w or GARBAGE in w or not set(w) <= chars:
            raise ValueError(f"lexicon: {w!r} is not one lower-case word spelled with the model's labels")
    if len(set(words)) != len(words):
        raise ValueError("lexicon: a word is listed twice")
    return words


def encode(text: str, labels: list[str] = VOCABULARY) -> list[int]:
    """Normalised text -> label indices (never the blank). Characters outside `labels` are dropped."""
    index = {c: i for i, c in enumerate(labels) if i}
    return [index[c] for c in normalize(text) if c in index]


def decode(ids, labels: list[str] = VOCABULARY) -> str:
    """Label indices -> text, blanks skipped. No CTC collapsing: see `ctc_collapse` for that."""
    return "".join(labels[i] for i in ids if i)


def ctc_collapse(ids) -> list[int]:
    """Frame-wise best labels -> label sequence: merge repeats, then drop blanks (index 0)."""
    out, last = [], 0
    for i in ids:
        if i != last and i:
            out.append(i)
        last = i
    return out
