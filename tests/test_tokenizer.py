"""SentencePiece through tensorflow-text: exact round trips, reserved ids, caching."""

from __future__ import annotations

import sys

import pytest
import tensorflow as tf

from app.data.corpus import normalize_text
from app.data.tokenizer import (
    END_ID,
    PAD_ID,
    START_ID,
    UNKNOWN_ID,
    SubwordTokenizer,
    fit_tokenizers,
    normalize,
    read_side,
    round_trip_failures,
    train_sentencepiece,
)
from tests.conftest import BIBLE_SAMPLE

SETTINGS = {
    "source_vocab_size": 400,
    "target_vocab_size": 400,
    "model_type": "unigram",
    "character_coverage": 1.0,
    "max_training_sentences": 10_000,
}


@pytest.fixture(scope="module")
def english() -> SubwordTokenizer:
    return SubwordTokenizer(train_sentencepiece(read_side(BIBLE_SAMPLE, 1), 400))


def test_round_trip_is_exact_on_the_corpus_and_on_unseen_text(english):
    sentences = list(read_side(BIBLE_SAMPLE, 1)) + [
        "You've won. Don't stop!",  # apostrophes, no space before punctuation
        "¿Dónde está el niño? Ça va, Zoë.",  # accents unseen in English training text
        "Emoji 😀 and 日本語 and Ελληνικά",  # other scripts: byte fallback, never [UNK]
        "",
    ]
    assert round_trip_failures(english, sentences) == []


def test_normalisation_is_nfc_and_collapses_whitespace(english):
    decomposed = "cafe\u0301  con   leche "
    restored = english.detokenize(english.tokenize(tf.constant([decomposed])))[0].numpy().decode()
    assert restored == "caf\u00e9 con leche"


def python_whitespace() -> list[str]:
    """Every code point `str.split()` splits on, from the running Python's own Unicode tables."""
    return [chr(code_point) for code_point in range(sys.maxunicode + 1) if chr(code_point).isspace()]


def code_point_name(character: str) -> str:
    return f"U+{ord(character):04X}"


def in_graph(sentences: list[str]) -> list[str]:
    return [text.decode() for text in normalize(tf.constant(sentences)).numpy()]


def test_in_graph_normalize_treats_exactly_python_whitespace_as_whitespace():
    """The serving side must split where corpus preparation split, and nowhere else."""
    characters = [
        chr(code_point) for code_point in range(sys.maxunicode + 1) if not 0xD800 <= code_point <= 0xDFFF
    ]
    normalized = in_graph([f"a{character}b" for character in characters])
    collapsed = [character for character, text in zip(characters, normalized, strict=True) if text == "a b"]
    assert list(map(code_point_name, collapsed)) == list(map(code_point_name, python_whitespace()))


def test_in_graph_normalize_equals_corpus_normalize_text_for_unicode_whitespace():
    """A sentence must read the same at training time (Python) and serving time (SavedModel)."""
    whitespace = python_whitespace()
    sentences = ["".join(whitespace), "x" + "".join(whitespace) + "y"]
    for space in whitespace:
        sentences += [space, f"a{space}b", f"{space}a{space}{space}b{space}", f"a \t{space}\n{space} b"]
        sentences += [f"cafe\u0301{space}noir", f"{space}\u0301e{space}"]  # NFC next to the space
    sentences += ["No\u00a0way\u2009!\u3000\u3000Yes ", "\u2028\u2029\u0085\u000b\u001cend\u202f"]
    mismatches = [
        (ascii(sentence), ascii(expected), ascii(got))
        for sentence, expected, got in zip(
            sentences, map(normalize_text, sentences), in_graph(sentences), strict=True
        )
        if expected != got
    ]
    assert mismatches == []


def test_no_unknown_ids_and_reserved_ids_are_not_produced(english):
    ids = english.tokenize(tf.constant(["Zoë 😀 ß", "In the beginning."])).flat_values.numpy()
    assert not set(ids) & {PAD_ID, START_ID, END_ID, UNKNOWN_ID}


def test_detokenize_ignores_padding_and_markers(english):
    ids = english.tokenize(tf.constant(["Jesus wept."])).to_tensor()
    framed = tf.concat([[[START_ID]], ids, [[END_ID, PAD_ID, PAD_ID]]], axis=1)
    assert english.detokenize(framed)[0].numpy().decode() == "Jesus wept."


def test_too_small_vocabulary_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="byte fallback"):
        train_sentencepiece(["a b c"], 100)


def test_fit_tokenizers_reuses_unchanged_models(tmp_path):
    messages: list[str] = []
    paths = fit_tokenizers(BIBLE_SAMPLE, tmp_path / "vocab", SETTINGS, log=messages.append)
    first = paths["source"].read_bytes()
    assert not any("Reusing" in message for message in messages)
    fit_tokenizers(BIBLE_SAMPLE, tmp_path / "vocab", SETTINGS, log=messages.append)
    assert messages[-1].startswith("Reusing") and paths["source"].read_bytes() == first
    assert (tmp_path / "vocab" / "target.vocab").read_text().splitlines()[0].startswith("<pad>")
    fit_tokenizers(
        BIBLE_SAMPLE, tmp_path / "vocab", {**SETTINGS, "source_vocab_size": 450}, log=messages.append
    )
    assert not messages[-1].startswith("Reusing")
