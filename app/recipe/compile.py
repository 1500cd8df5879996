"""The model compiled for training: its learning-rate schedule, optimizer, loss and metrics, with
its variables made in a distribution strategy's scope."""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from app.config import Config, TrainConfig
from app.data.prepare import PreparedData
from app.models.losses import MaskedPerplexity, MaskedTokenAccuracy, label_smoothed_cross_entropy
from app.models.precision import training_policy
from app.models.seq2seq import build_model
from app.recipe import schedule
from app.recipe.optimizer import ReplicaSumClippingAdam, ReplicaSumClippingAdamW
from app.recipe.schedule import ResizableCosineDecay


def learning_rate_schedule(train: TrainConfig, total_steps: int) -> ResizableCosineDecay:
    """`train`'s warm-up and cosine decay over `total_steps` (`app.recipe.schedule`)."""
    return schedule.learning_rate_schedule(
        train.learning_rate, train.min_learning_rate_ratio, train.warmup_steps, total_steps
    )


# Decoupled weight decay leaves these alone (as BERT's and most recipes do): a bias or a gate's offset
# has no scale to shrink toward zero.
NO_WEIGHT_DECAY = ("bias",)


def make_optimizer(train: TrainConfig, total_steps: int) -> keras.optimizers.Optimizer:
    """Adam on `learning_rate_schedule` (AdamW when `train.weight_decay` > 0, biases excluded), with
    gradient-norm clipping (of the gradients summed over the replicas, under a distribution strategy)."""
    settings = {"learning_rate": learning_rate_schedule(train, total_steps), "clipnorm": train.clipnorm}
    if not train.weight_decay:
        return ReplicaSumClippingAdam(**settings)
    optimizer = ReplicaSumClippingAdamW(weight_decay=train.weight_decay, **settings)
    optimizer.exclude_from_weight_decay(var_names=list(NO_WEIGHT_DECAY))
    return optimizer


def compile_model(
    config: Config,
    data: PreparedData,
    total_steps: int,
    strategy: tf.distribute.Strategy | None = None,
    before_compile: Callable[[keras.Model], None] | None = None,
) -> keras.Model:
    """The model for `config`, compiled for training (precision policy, loss, metrics, optimizer), its
    variables made in `strategy`'s scope (default: no distribution). Under mixed_float16 Keras wraps
    the optimizer in a LossScaleOptimizer. `before_compile(model)` runs in the scope between building
    and compiling (pretrained embeddings: freezing a layer must precede `compile`)."""
    keras.mixed_precision.set_global_policy(training_policy(config.train.precision))
    with (strategy or tf.distribute.get_strategy()).scope():
        model = build_model(
            data.source_tokenizer.vocab_size,
            data.target_tokenizer.vocab_size,
            **config.model.architecture(),
        )
        if before_compile:
            before_compile(model)
        model.compile(
            optimizer=make_optimizer(config.train, total_steps),
            loss=label_smoothed_cross_entropy(config.train.label_smoothing),
            metrics=[MaskedTokenAccuracy(), MaskedPerplexity()],
            jit_compile=config.train.jit_compile,
            steps_per_execution=config.train.steps_per_execution,
        )
    return model


def schedule_of(model: keras.Model) -> ResizableCosineDecay:
    """The learning-rate schedule `compile_model` gave the model's optimizer (Keras has no public
    accessor: `optimizer.learning_rate` is the current value)."""
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)  # a LossScaleOptimizer's
    return optimizer._learning_rate
