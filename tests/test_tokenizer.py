"""SentencePiece through tensorflow-text: exact round trips, reserved ids, caching."""

from __future__ import annotations

import pytest
import tensorflow as tf

from app.data.tokenizer import (
    END_ID,
    PAD_ID,
    START_ID,
    UNKNOWN_ID,
    SubwordTokenizer,
    fit_tokenizers,
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
