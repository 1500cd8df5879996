"""Word alignments from attention weights, in Pharaoh format (`0-0 1-2 …`, as fast_align and Moses
write them: source word index, a dash, target word index).

A word is what detokenization leaves between spaces (`translation.split()`): a SentencePiece piece
starting with "▁" starts a word, and the pieces after it up to the next such piece belong to it.
Each target word is aligned to the source word with the highest attention summed over the target
word's pieces and the source word's pieces. Core TensorFlow ops only, batched, so the
export computes it in the graph.

    alignment = pharaoh_alignment(attention, source_pieces, target_pieces)  # string [batch]
"""

from __future__ import annotations

import tensorflow as tf

WORD_START = "▁"  # SentencePiece's meta symbol for a space before the piece


def word_indices(pieces: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """`pieces` string `[batch, n]` ("" where no piece is: padding, markers) → each piece's 0-based
    word index `[batch, n]` int32 and whether it belongs to a word `[batch, n]` bool.

    The words are `detokenized.split()`'s: a visible piece starts a word if it starts with "▁", if
    a piece of "▁" alone (a space) comes before it, or if it is the row's first visible piece;
    pieces of "▁" alone belong to no word."""
    present = tf.not_equal(pieces, "")
    blank = tf.logical_and(present, tf.strings.regex_full_match(pieces, f"{WORD_START}*"))
    visible = tf.logical_and(present, tf.logical_not(blank))
    after_blank = tf.pad(blank[:, :-1], [[0, 0], [1, 0]])
    first_visible = tf.logical_and(visible, tf.equal(tf.cumsum(tf.cast(visible, tf.int32), axis=1), 1))
    spaced = tf.strings.regex_full_match(pieces, f"{WORD_START}.*")
    starts = tf.logical_and(visible, tf.reduce_any(tf.stack([spaced, after_blank, first_visible]), axis=0))
    return tf.cumsum(tf.cast(starts, tf.int32), axis=1) - 1, visible


def _word_one_hot(pieces: tf.Tensor) -> tf.Tensor:
    """`[batch, n, words]` float32: 1 where a piece belongs to a word (at least one word column)."""
    words, present = word_indices(pieces)
    depth = tf.maximum(tf.reduce_max(tf.concat([tf.reshape(words, [-1]), [0]], axis=0)) + 1, 1)
    return tf.one_hot(words, depth) * tf.cast(present, tf.float32)[..., None]


def word_attention(attention: tf.Tensor, source_pieces: tf.Tensor, target_pieces: tf.Tensor) -> tf.Tensor:
    """`attention [batch, tgt, src]` summed over each word's pieces on both sides →
    `[batch, target words, source words]`."""
    source_words = _word_one_hot(source_pieces)  # [batch, src, S]
    target_words = _word_one_hot(target_pieces)  # [batch, tgt, T]
    return tf.einsum("btw,bts,bsv->bwv", target_words, tf.cast(attention, tf.float32), source_words)


def pharaoh_alignment(attention: tf.Tensor, source_pieces: tf.Tensor, target_pieces: tf.Tensor) -> tf.Tensor:
    """One string per sentence: `i-j` for each target word j (in order) and the source word i it
    attends to most; "" for an empty translation or source. A tie goes to the first source word.

    Args:
        attention: float `[batch, tgt, src]`, a target piece's weights over the source pieces.
        source_pieces, target_pieces: string `[batch, src]`, `[batch, tgt]`: the pieces, "" where
            no word piece is (padding, the end marker).
    """
    scores = word_attention(attention, source_pieces, target_pieces)  # [batch, T, S]
    best_source = tf.argmax(scores, axis=-1, output_type=tf.int32)  # [batch, T]
    target_words, target_present = word_indices(target_pieces)
    count = tf.reduce_max(tf.where(target_present, target_words + 1, 0), axis=1, keepdims=True)  # [batch, 1]
    has_source = tf.reduce_any(tf.not_equal(source_pieces, ""), axis=1, keepdims=True)  # [batch, 1]
    target_index = tf.broadcast_to(tf.range(tf.shape(scores)[1]), tf.shape(best_source))
    real = tf.logical_and(target_index < count, has_source)  # [batch, T]
    pairs = tf.strings.join([tf.strings.as_string(best_source), tf.strings.as_string(target_index)], "-")
    return tf.strings.reduce_join(tf.ragged.boolean_mask(pairs, real), axis=1, separator=" ")
