"""Word alignments from a hand-made attention matrix: pieces grouped into words, attention summed
over both sides' pieces, Pharaoh format."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from app.models.alignment import pharaoh_alignment, word_attention, word_indices

# source "el perro ladra" in pieces (then the end marker, blanked, and padding);
# target "the dog barks": ▁the ▁do g ▁bark s (then the end marker, blanked)
SOURCE = [["▁el", "▁per", "ro", "▁la", "dra", "", ""]]
TARGET = [["▁the", "▁do", "g", "▁bark", "s", ""]]
# rows: target pieces; columns: source pieces. "g" alone prefers "▁la", but "▁do"+"g" summed
# prefer "▁per"+"ro" (0.5 + 0.2 + 0.1 + 0.3 = 1.1 against 0.1 + 0.1 + 0.4 + 0.2 = 0.8)
ATTENTION = [
    [
        [0.8, 0.1, 0.0, 0.1, 0.0, 0.0, 0.0],
        [0.1, 0.5, 0.2, 0.1, 0.1, 0.0, 0.0],
        [0.0, 0.1, 0.3, 0.4, 0.2, 0.0, 0.0],
        [0.0, 0.0, 0.4, 0.3, 0.3, 0.0, 0.0],  # "ro" 0.4 alone, but "▁la"+"dra" = 0.6
        [0.1, 0.2, 0.2, 0.2, 0.3, 0.0, 0.0],
        [0.2, 0.2, 0.2, 0.2, 0.2, 0.0, 0.0],  # the end marker's row: no word
    ]
]


def test_pieces_group_into_the_words_that_detokenizing_leaves():
    words, present = word_indices(
        tf.constant([["▁el", "▁per", "ro", "▁", "¡", "hola", "▁!", ""], ["a", "b", "▁c", "", "", "", "", ""]])
    )
    np.testing.assert_array_equal(
        np.where(present.numpy(), words.numpy(), -1),
        [[0, 1, 1, -1, 2, 2, 3, -1], [0, 0, 1, -1, -1, -1, -1, -1]],
    )


def test_attention_is_summed_over_each_word_s_pieces_on_both_sides():
    summed = word_attention(tf.constant(ATTENTION), tf.constant(SOURCE), tf.constant(TARGET)).numpy()[0]
    np.testing.assert_allclose(summed, [[0.8, 0.1, 0.1], [0.1, 1.1, 0.8], [0.1, 0.8, 1.1]], atol=1e-6)


def test_each_target_word_gets_its_most_attended_source_word_in_pharaoh_format():
    alignment = pharaoh_alignment(tf.constant(ATTENTION), tf.constant(SOURCE), tf.constant(TARGET))
    assert alignment.numpy().tolist() == [b"0-0 1-1 2-2"]


def test_a_batch_with_an_empty_translation_and_an_empty_source():
    source = [["▁a", "▁b"], ["", ""], ["▁x", ""]]
    target = [["▁c", "▁d"], ["▁e", ""], ["", ""]]
    attention = [[[0.1, 0.9], [0.7, 0.3]], [[0.5, 0.5], [0.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]]]
    alignment = pharaoh_alignment(tf.constant(attention), tf.constant(source), tf.constant(target))
    assert alignment.numpy().tolist() == [b"1-0 0-1", b"", b""]
