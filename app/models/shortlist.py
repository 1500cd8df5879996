"""Decoding over a shortlist: per batch, only the target pieces worth scoring (Jean et al., 2015).

The vocabulary projection and its softmax are half of a decoder step's time at batch 64 (the
benchmark's profile); a batch's candidate list, the frequent pieces plus the likely translations
of the pieces in its sources (`app.data.lexicon`), is a fraction of the vocabulary. The searches
run unchanged over positions in that list: it is sorted and always holds the reserved ids, which
are the smallest, so padding, start and end keep their ids as their positions.
"""

from __future__ import annotations

import tensorflow as tf

from app.special_tokens import FIRST_PIECE_ID


def shortlist_candidates(source_ids: tf.Tensor, translations: tf.Tensor, frequent: tf.Tensor) -> tf.Tensor:
    """`[C]` sorted target ids to score for the batch `source_ids [batch, src]`: the reserved ids,
    `frequent [F]`, and the rows of `translations [source vocab, M]` of every source id present."""
    present, _ = tf.unique(tf.reshape(source_ids, [-1]))
    aligned = tf.reshape(tf.gather(translations, present), [-1])  # [present · M], 0-padded
    candidates, _ = tf.unique(tf.concat([tf.range(FIRST_PIECE_ID), frequent, aligned], axis=0))
    return tf.sort(candidates)
