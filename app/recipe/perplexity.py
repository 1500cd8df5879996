"""Held-out perplexity: how well the trained model predicts a file of pairs it never saw, teacher-forced
(the figure `attend train` and `attend evaluate` report for the test split)."""

from __future__ import annotations

from pathlib import Path

import keras

from app.config import Config
from app.data.pipeline import make_dataset
from app.data.tokenizer import SubwordTokenizer
from app.models.losses import perplexity
from app.recipe.strategy_loop import DevEvaluation


def held_out_perplexity(
    model: keras.Model, config: Config, tokenizers: tuple[SubwordTokenizer, SubwordTokenizer], tsv: Path
) -> dict:
    """Teacher-forced cross-entropy of `model` on a file of pairs: `perplexity` (exp of the mean per
    target token, padding excluded, no label smoothing), `cross_entropy` (that mean, in nats) and the
    `target_tokens` counted. Every pair the translator would translate whole counts (sources up to
    decode.max_input_tokens, targets up to decode.max_output_tokens), not only those training keeps."""
    dataset = make_dataset(
        tsv,
        *tokenizers,
        batch_size=config.train.batch_size,
        max_source_tokens=config.decode.max_input_tokens,
        max_target_tokens=config.decode.max_output_tokens,
        bucket_width=config.train.bucket_width,
    )
    loss_sum = tokens = 0.0
    for _, _, nll_sum, _, count in DevEvaluation(model).counts(dataset):
        loss_sum, tokens = loss_sum + nll_sum, tokens + count
    return {
        "perplexity": perplexity(loss_sum, tokens),
        "cross_entropy": loss_sum / tokens if tokens else float("nan"),
        "target_tokens": int(tokens),
    }
