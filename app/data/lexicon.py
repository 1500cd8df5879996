"""The lexical table behind a decoding shortlist: the target pieces most worth scoring for a batch.

Jean et al. (2015, "On Using Very Large Target Vocabulary for Neural Machine Translation", from
Bahdanau's group) decode over a per-batch candidate list instead of the whole vocabulary: the
most frequent target words plus each source word's likely translations. This module learns both
from the train split: target piece frequencies, and for each source piece the target pieces it
co-occurs with most specifically (Dice coefficient of the sentences holding each, so that a piece
found in every sentence does not crowd out the translations; the frequent list has those).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import sentencepiece

from app.data.tokenizer import sample_lines
from app.special_tokens import FIRST_PIECE_ID

PAIRS_PER_CHUNK = 10_000  # co-occurrences are counted this many pairs at a time (bounded memory)


class LexicalTable(NamedTuple):
    """What a shortlist is drawn from; ids are the run's SentencePiece ids."""

    frequent: np.ndarray  # [F] int32, target pieces by falling frequency (reserved ids excluded)
    translations: np.ndarray  # [source vocab, M] int32, each source piece's likeliest target pieces, 0-padded


def build_lexical_table(
    tsv_paths: Path | Sequence[Path],
    vocab_dir: Path,
    frequent: int,
    per_source: int,
    max_pairs: int = 100_000,
    seed: int = 0,
) -> LexicalTable:
    """Counts a seeded sample of at most `max_pairs` train pairs (prepared, so already normalised
    text) with the `source.model`/`target.model` SentencePiece models in `vocab_dir`."""
    if frequent < 0 or per_source < 0:
        raise ValueError(f"shortlist sizes must be at least 0: frequent={frequent}, per_source={per_source}")
    processors = [
        sentencepiece.SentencePieceProcessor(model_file=str(vocab_dir / f"{side}.model"))
        for side in ("source", "target")
    ]
    source_size, target_size = (int(processor.get_piece_size()) for processor in processors)
    lines = sample_lines(tsv_paths, max_pairs, seed)
    if not lines:
        raise ValueError(f"No pairs in {tsv_paths} to learn a shortlist from")
    token_counts = np.zeros(target_size, np.int64)
    source_sentences, target_sentences = np.zeros(source_size, np.int64), np.zeros(target_size, np.int64)
    pair_codes, pair_counts = [], []
    for start in range(0, len(lines), PAIRS_PER_CHUNK):
        chunk = [line.split("\t")[:2] for line in lines[start : start + PAIRS_PER_CHUNK]]
        sources, targets = (
            processor.encode([pair[side] for pair in chunk]) for side, processor in enumerate(processors)
        )
        token_counts += np.bincount(np.concatenate([[], *targets]).astype(np.int64), minlength=target_size)
        source_sets, target_sets = [[np.unique(ids) for ids in side] for side in (sources, targets)]
        source_sentences += np.bincount(np.concatenate(source_sets), minlength=source_size)
        target_sentences += np.bincount(np.concatenate(target_sets), minlength=target_size)
        codes = [
            (source_set[:, None].astype(np.int64) * target_size + target_set[None, :]).ravel()
            for source_set, target_set in zip(source_sets, target_sets, strict=True)
        ]
        unique, counts = np.unique(np.concatenate(codes), return_counts=True)
        pair_codes.append(unique)
        pair_counts.append(counts)
    codes, inverse = np.unique(np.concatenate(pair_codes), return_inverse=True)
    together = np.bincount(inverse, weights=np.concatenate(pair_counts))
    return LexicalTable(
        _most_frequent(token_counts, frequent),
        _likeliest_translations(codes, together, source_sentences, target_sentences, per_source),
    )


def _most_frequent(token_counts: np.ndarray, count: int) -> np.ndarray:
    """The `count` most frequent ordinary pieces (ties by id), reserved ids left out: decoding adds them."""
    order = np.lexsort((np.arange(len(token_counts)), -token_counts))
    order = order[(order >= FIRST_PIECE_ID) & (token_counts[order] > 0)]
    return order[:count].astype(np.int32)


def _likeliest_translations(
    codes: np.ndarray,
    together: np.ndarray,
    source_sentences: np.ndarray,
    target_sentences: np.ndarray,
    per_source: int,
) -> np.ndarray:
    """`[source vocab, per_source]`: for each source piece, the target pieces of highest Dice
    coefficient 2·c(s, t) / (c(s) + c(t)) over sentence counts, best first, 0 where fewer co-occur."""
    target_size = len(target_sentences)
    source, target = codes // target_size, codes % target_size
    dice = 2 * together / (source_sentences[source] + target_sentences[target])
    keep = target >= FIRST_PIECE_ID
    source, target, dice = source[keep], target[keep], dice[keep]
    order = np.lexsort((target, -dice, source))  # by source piece, then best first
    source, target = source[order], target[order]
    starts = np.searchsorted(source, source, side="left")
    rank = np.arange(len(source)) - starts  # position within its source piece's list
    chosen = rank < per_source
    table = np.zeros((len(source_sentences), per_source), np.int32)
    table[source[chosen], rank[chosen]] = target[chosen]
    return table
