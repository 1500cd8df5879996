"""The learning-rate schedule: linear warm-up, then a cosine decay whose length can change while
training runs, so that a run under a time budget (`train.max_minutes`) decays to its floor at the
last epoch that fits rather than at `train.epochs`.
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="attend")
class ResizableCosineDecay(keras.optimizers.schedules.CosineDecay):
    """Keras's `CosineDecay` with warm-up, its decay length held in a variable: Keras 3.15 reads
    `decay_steps` with `ops.cast` inside the traced train step, so `resize` takes effect at the next
    step without retracing. The warm-up stays as it was built."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # made where the optimizer is (compile_model: inside the strategy's scope)
        self.decay_steps = tf.Variable(float(self.decay_steps), trainable=False, name="decay_steps")

    def resize(self, total_steps: int) -> None:
        """Decays to the floor at step `total_steps` (warm-up included) instead."""
        self.decay_steps.assign(float(max(total_steps - self.warmup_steps, 1)))

    @property
    def total_steps(self) -> int:
        return int(self.decay_steps.numpy()) + self.warmup_steps

    def get_config(self):
        return {**super().get_config(), "decay_steps": int(self.decay_steps.numpy())}


def learning_rate_schedule(
    learning_rate: float, min_ratio: float, warmup_steps: int, total_steps: int
) -> ResizableCosineDecay:
    """Linear warm-up (at most a tenth of the steps), then cosine decay to `min_ratio` of the peak
    at the last step."""
    warmup = min(warmup_steps, max(total_steps // 10, 1))
    return ResizableCosineDecay(
        initial_learning_rate=0.0,
        decay_steps=max(total_steps - warmup, 1),
        alpha=min_ratio,
        warmup_target=learning_rate,
        warmup_steps=warmup,
    )
