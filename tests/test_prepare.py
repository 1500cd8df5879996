"""Preparation: what the length filter keeps of each split is counted, matches the pipeline, and an
emptied split stops the run with a message that names the setting to change."""

from __future__ import annotations

from pathlib import Path

import pytest
import sentencepiece

from app.config import load_config
from app.data.pipeline import make_dataset
from app.data.prepare import LengthFilterCounts, check_enough_pairs, count_length_filter, prepare_data
from app.data.tokenizer import read_side
from tests.conftest import tiny_overrides


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    config = load_config("smoke", tiny_overrides())
    return prepare_data(config, tmp_path_factory.mktemp("data"), log=lambda *_: None)


def python_lengths(model: Path, sentences: list[str]) -> list[int]:
    """Pieces per sentence, one sentence at a time, plus the end marker."""
    processor = sentencepiece.SentencePieceProcessor(model_file=str(model))
    return [len(processor.encode(sentence)) + 1 for sentence in sentences]


def test_length_filter_counts_match_an_independent_count_and_the_pipeline(prepared):
    tsv = prepared.corpus.train
    sources = python_lengths(prepared.vocab_dir / "source.model", list(read_side(tsv, 0)))
    targets = python_lengths(prepared.vocab_dir / "target.model", list(read_side(tsv, 1)))
    limit = sorted(sources)[len(sources) // 2]  # about half the sources are longer
    counts = count_length_filter("train", tsv, prepared.vocab_dir, limit, limit)
    source_long = sum(length > limit for length in sources)
    target_long = sum(t > limit and s <= limit for s, t in zip(sources, targets, strict=True))
    assert counts == LengthFilterCounts(
        "train", len(sources), len(sources) - source_long - target_long, source_long, target_long
    )
    assert 0 < counts.kept < counts.pairs and counts.source_too_long > 0 and counts.target_too_long > 0
    batches = make_dataset(
        tsv, *prepared.tokenizers, batch_size=16, max_source_tokens=limit, max_target_tokens=limit
    )
    assert sum(int(source.shape[0]) for (source, _), _ in batches) == counts.kept
    assert f"train: {counts.kept:,} of {counts.pairs:,} pairs kept" in counts.describe()


def test_a_split_emptied_by_the_filter_stops_with_the_setting_to_change():
    check_enough_pairs(LengthFilterCounts("train", 100, 64, 30, 6), batch_size=64)
    check_enough_pairs(LengthFilterCounts("dev", 100, 3, 90, 7), batch_size=64)  # small dev still validates
    with pytest.raises(ValueError) as stopped:
        check_enough_pairs(LengthFilterCounts("train", 500, 2, 480, 18), batch_size=64)
    message = str(stopped.value)
    assert "train split has 2 of 500 pairs" in message
    assert "480 with a source over train.max_source_tokens" in message and "train.batch_size" in message
    with pytest.raises(ValueError, match="dev split has 0 of 40 pairs"):
        check_enough_pairs(LengthFilterCounts("dev", 40, 0, 40, 0), batch_size=64)
