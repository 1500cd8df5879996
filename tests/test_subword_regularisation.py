"""Subword regularisation (Kudo, 2018): the train pipeline draws a segmentation of each source (and
with `tokenizer.sample_target`, each target) every epoch; dev, test and the export read the best one.

The draws come from SentencePiece's own generator, which nothing seeds (docs/training.md), so these
tests ask only for what holds whatever the draw: two epochs over 600 sentences of some 30 pieces
each, at alpha 0.1, see the same segmentations everywhere with a probability far below 1e-100.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path

import pytest
import sentencepiece
import tensorflow as tf

from app.config import SAMPLING_SETTINGS, load_config
from app.data.pipeline import SubwordSampling, make_dataset
from app.data.prepare import prepare_data, tokenizer_settings
from app.data.tokenizer import END_ID, START_ID, SubwordTokenizer, read_side, train_sentencepiece
from app.export import export_run
from app.recipe import make_train_set
from app.train import train
from tests.conftest import BIBLE_SAMPLE, tiny_overrides

SAMPLED = {"tokenizer.sampling_alpha": 0.1, "tokenizer.sampling_nbest": -1}
PAIRS = len(BIBLE_SAMPLE.read_text(encoding="utf-8").splitlines())


@pytest.fixture(scope="module")
def models() -> tuple[bytes, bytes]:
    return tuple(train_sentencepiece(read_side(BIBLE_SAMPLE, side), 400) for side in (0, 1))


@pytest.fixture(scope="module")
def tokenizers(models) -> tuple[SubwordTokenizer, SubwordTokenizer]:
    return tuple(SubwordTokenizer(model) for model in models)


def epoch(dataset: tf.data.Dataset) -> dict[tuple, list[tuple]]:
    """One pass: each pair's source ids, grouped by its target ids (targets are not sampled here)."""
    sources = defaultdict(list)
    for (source, _), target_out in dataset.as_numpy_iterator():
        for source_row, target_row in zip(source, target_out, strict=True):
            sources[tuple(target_row[target_row != 0])].append(tuple(source_row[source_row != 0]))
    return {target: sorted(rows) for target, rows in sources.items()}


def pipeline(tokenizers, sampling=None, **options) -> tf.data.Dataset:
    settings = {"batch_size": 16, "max_source_tokens": 64, "max_target_tokens": 64, "bucket_width": 4}
    return make_dataset(BIBLE_SAMPLE, *tokenizers, sampling=sampling, **{**settings, **options})


def test_off_by_default_and_the_tokenizers_fingerprint_ignores_it():
    """Existing runs and prepared data are untouched: no sampling unless asked for, and turning it on
    reuses the fitted models (the sampling settings are not theirs)."""
    default = load_config("smoke")
    assert SubwordSampling.of(default.tokenizer) is None
    sampled = load_config("smoke", [f"{key}={value}" for key, value in SAMPLED.items()])
    assert SubwordSampling.of(sampled.tokenizer) == SubwordSampling(0.1, -1, False)
    assert tokenizer_settings(sampled) == tokenizer_settings(default)
    assert not set(SAMPLING_SETTINGS) & set(tokenizer_settings(default))


@pytest.mark.parametrize(
    "override, message",
    [
        ("tokenizer.sampling_alpha=1.5", "between 0 (off) and 1"),
        ("tokenizer.sampling_alpha=-0.1", "between 0 (off) and 1"),
        ("tokenizer.sampling_nbest=1", "-1 (all) or between 2 and 512"),  # 0 and 1: no sampling at all
        ("tokenizer.sampling_nbest=0", "-1 (all) or between 2 and 512"),
        ("tokenizer.sampling_nbest=513", "-1 (all) or between 2 and 512"),
    ],
)
def test_settings_out_of_range_are_refused(override, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config("smoke", ["tokenizer.sampling_alpha=0.1", override])


def test_a_model_with_one_segmentation_cannot_be_sampled():
    load_config("smoke", ["tokenizer.sampling_alpha=0.1", "tokenizer.model_type=bpe"])  # BPE-dropout
    load_config("smoke", ["tokenizer.sampling_alpha=0.1", "tokenizer.target_model_type=word"])
    with pytest.raises(ValueError, match="target segmentation.*'word'"):
        load_config(
            "smoke",
            [
                "tokenizer.sampling_alpha=0.1",
                "tokenizer.target_model_type=word",
                "tokenizer.sample_target=true",
            ],
        )


def test_without_sampling_every_epoch_reads_the_best_segmentation(tokenizers, models):
    """alpha 0: the pipeline as before, SentencePiece's best segmentation in every epoch."""
    dataset = pipeline(tokenizers, shuffle_buffer=PAIRS, seed=1)
    first, second = epoch(dataset), epoch(dataset)
    assert first == second
    source, target = (sentencepiece.SentencePieceProcessor(model_proto=model) for model in models)
    expected = defaultdict(list)
    for line in BIBLE_SAMPLE.read_text(encoding="utf-8").splitlines():
        source_text, target_text = line.split("\t")[:2]
        expected[(*target.encode(target_text), END_ID)].append((*source.encode(source_text), END_ID))
    assert first == {key: sorted(rows) for key, rows in expected.items()}


def test_a_cached_train_set_draws_a_new_segmentation_every_epoch(tokenizers):
    dataset = pipeline(tokenizers, SubwordSampling(0.1), shuffle_buffer=PAIRS, seed=1, cache=True)
    best = epoch(pipeline(tokenizers))
    first, second = epoch(dataset), epoch(dataset)
    # the same pairs every epoch, the targets untouched (sample_target is off) ...
    assert first.keys() == second.keys() == best.keys()
    # ... their sources drawn anew: a cache after the draw would replay the first epoch's
    assert sum(first[target] != second[target] for target in first) > PAIRS // 4
    assert sum(first[target] != best[target] for target in first) > PAIRS // 4
    # each draw segments its own sentence: the pieces spell the pair's source
    spell = tokenizers[0].detokenize
    for target in list(first)[:100]:
        assert sorted(spell(tf.ragged.constant(first[target])).numpy()) == sorted(
            spell(tf.ragged.constant(best[target])).numpy()
        )


def targets(dataset: tf.data.Dataset) -> list[tuple]:
    """One pass's target ids (target_out: the pieces and the end marker), checking the markers."""
    rows = []
    for (_, target_in), target_out in dataset.as_numpy_iterator():
        assert (target_in[:, 0] == START_ID).all()
        lengths = (target_out != 0).sum(axis=1)
        assert (target_out[range(len(target_out)), lengths - 1] == END_ID).all()
        rows += [tuple(row[row != 0]) for row in target_out]
    return rows


def test_sampled_targets_keep_their_markers_and_their_text(tokenizers):
    best, drawn = (
        targets(pipeline(tokenizers)),
        targets(pipeline(tokenizers, SubwordSampling(0.1, target=True))),
    )
    assert len(drawn) == len(best) == PAIRS
    assert sorted(drawn) != sorted(best)
    detokenize = tokenizers[1].detokenize
    assert sorted(detokenize(tf.ragged.constant(drawn)).numpy()) == sorted(
        detokenize(tf.ragged.constant(best)).numpy()
    )


@pytest.mark.parametrize("nbest", [-1, 8])
def test_the_length_filter_keeps_the_same_pairs_and_a_long_draw_gives_way(tokenizers, nbest):
    """Sampled segmentations are longer: a draw over the limit falls back to the best segmentation,
    so the pairs (and `app.data.prepare`'s counts) stay those of the best segmentation."""
    limits = {"max_source_tokens": 30, "max_target_tokens": 30}
    best = epoch(pipeline(tokenizers, **limits))
    assert 0 < len(best) < PAIRS  # the limit bites
    sampling = SubwordSampling(1.0 if nbest > 0 else 0.1, nbest, target=True)
    for (source, _), target_out in pipeline(tokenizers, sampling, **limits).as_numpy_iterator():
        assert source.shape[1] <= 30 and target_out.shape[1] <= 30
    drawn = pipeline(tokenizers, sampling, **limits)
    count = sum(len(target_out) for _, target_out in drawn.as_numpy_iterator())
    assert count == sum(len(rows) for rows in best.values())


def test_the_sampler_leaves_its_tokenizer_at_the_best_segmentation(tokenizers, tmp_path: Path):
    """The tokenizer a Translator saves keeps the best segmentation, in process and reloaded."""
    tokenizer = tokenizers[0]
    text = tf.constant(["En el principio crió Dios los cielos y la tierra."] * 8)
    best = tokenizer.tokenize(text).to_list()
    sampler = tokenizer.sampling(-1, 0.1)
    assert sampler.tokenize(text).to_list() != best
    assert tokenizer.tokenize(text).to_list() == best
    module = tf.Module()
    module.tokenizer = tokenizer
    module.tokenize = tf.function(tokenizer.tokenize, input_signature=[tf.TensorSpec([None], tf.string)])
    tf.saved_model.save(module, str(tmp_path / "saved"))
    assert tf.saved_model.load(str(tmp_path / "saved")).tokenize(text).to_list() == best


def test_the_train_set_samples_the_sources(tmp_path: Path):
    """`make_train_set` reads the setting (dev and export do not: see the export test)."""
    config = load_config("smoke", tiny_overrides(**SAMPLED, **{"train.shuffle_buffer": PAIRS}))
    data = prepare_data(config, tmp_path / "data", log=lambda *_: None)
    train_set = make_train_set(config, data)
    first, second = epoch(train_set), epoch(train_set)
    assert first.keys() == second.keys()
    assert sum(first[target] != second[target] for target in first) > len(first) // 4
    plain = make_train_set(dataclasses.replace(config, tokenizer=load_config("smoke").tokenizer), data)
    assert epoch(plain) == epoch(plain)


@pytest.mark.slow
def test_the_export_of_a_sampled_run_reads_the_best_segmentation(trained_run, tmp_path: Path):
    """A run trained with sampling exports the tokenization of one trained without: same pieces for
    the same text, call after call."""
    overrides = tiny_overrides(
        **SAMPLED,
        **{"tokenizer.sample_target": "true", "train.epochs": 1, "train.steps_per_epoch": 2},
        **{"train.bleu_sentences": 0},
    )
    config = load_config("smoke", overrides)
    train(config, tmp_path / "run", trained_run.parent / "data", log=lambda *_: None)
    export_run(tmp_path / "run", log=lambda *_: None)
    sentences = tf.constant(
        [line.split("\t")[0] for line in BIBLE_SAMPLE.read_text(encoding="utf-8").splitlines()[:8]]
    )
    pieces = []
    for export in (trained_run / "export", tmp_path / "run" / "export", tmp_path / "run" / "export"):
        signature = tf.saved_model.load(str(export)).signatures["translate_with_attention"]
        pieces.append(signature(text=sentences)["source_tokens"].numpy().tolist())
    assert pieces[0] == pieces[1] == pieces[2]
