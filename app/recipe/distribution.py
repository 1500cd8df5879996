"""`train.distribution`: which `tf.distribute` strategy trains, and which worker writes the run folder.

One class per strategy behind one interface (`Distribution`), picked in one registry
(`DISTRIBUTIONS`). Each says:
- `strategy()`: the `tf.distribute.Strategy` whose scope holds the model, optimizer and metrics;
- `runs_fit`: whether Keras's `model.fit` trains under it. Keras 3.15's `fit` fails under
  MultiWorkerMirroredStrategy (keras-team/keras#20585, tensorflow/tensorflow#72388: it reduces
  the first batch and every scalar log with collective ops that take neither), so `multi_worker`
  trains with `app.recipe.strategy_loop` (`strategy.run`, the same model, loss and callbacks);
- `static_shapes`: whether batches must have fixed shapes (TPUs compile one program per shape).

The global batch is `train.batch_size` whatever the number of replicas: each replica gets its
share, and the loss divides by the batch's target tokens over all replicas
(`app.models.losses.masked_cross_entropy`), so the learning-rate schedule needs no change.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import tensorflow as tf

from app.config import TrainConfig


@dataclass(frozen=True)
class WorkerRole:
    """This process's place among the workers of one training run (TF_CONFIG's task).

    Only the chief writes the run folder; the other workers write theirs into scratch folders
    that they remove (Keras's multi-worker guide).
    """

    index: int = 0
    count: int = 1
    is_chief: bool = True

    @property
    def description(self) -> str:
        chief = "the chief" if self.is_chief else "not the chief"
        return f"worker {self.index + 1} of {self.count} ({chief})"


def worker_role(distribution: str, tf_config: str | None = None) -> WorkerRole:
    """The role TF_CONFIG gives this process under `distribution` (read without starting TensorFlow).

    The chief is the `chief` task if the cluster names one, else worker 0, as TensorFlow decides.
    Every strategy but `multi_worker` runs in one process, which is the chief.
    """
    if distribution != "multi_worker":
        return WorkerRole()
    text = os.environ.get("TF_CONFIG", "") if tf_config is None else tf_config
    settings = parse_tf_config(text)
    cluster, task = settings["cluster"], settings["task"]
    count = sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))
    kind, index = task["type"], int(task["index"])
    is_chief = kind == "chief" or (kind == "worker" and index == 0 and not cluster.get("chief"))
    position = index + (len(cluster.get("chief", [])) if kind == "worker" else 0)
    return WorkerRole(index=position, count=count, is_chief=is_chief)


def parse_tf_config(text: str) -> dict:
    """TF_CONFIG's `cluster` and `task`, or a ValueError that says what a multi-worker run needs."""
    example = (
        'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
        '"task": {"type": "worker", "index": 0}}\''
    )
    if not text:
        raise ValueError(
            "train.distribution=multi_worker needs TF_CONFIG: the same cluster on every machine and each "
            f"machine's own task, e.g. {example}"
        )
    try:
        settings = json.loads(text)
        cluster, task = settings["cluster"], settings["task"]
        if task["type"] not in ("chief", "worker") or not isinstance(cluster, dict):
            raise ValueError
        members = cluster.get("worker" if task["type"] == "worker" else "chief", [])
        if not 0 <= int(task["index"]) < len(members):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise ValueError(
            f"TF_CONFIG is not a valid cluster description ({text!r}); expected e.g. {example}, with this "
            "task's type (chief or worker) and an index into that job's list"
        ) from None
    return settings


class Distribution:
    """One `train.distribution` value (see the module docstring)."""

    name = "none"
    runs_fit = True
    static_shapes = False

    def __init__(self, train: TrainConfig):
        self.train = train

    def strategy(self) -> tf.distribute.Strategy:
        return tf.distribute.get_strategy()  # the default strategy: one device, no replicas

    def role(self) -> WorkerRole:
        return worker_role(self.name)

    def describe(self, strategy: tf.distribute.Strategy) -> str:
        return f"train.distribution={self.name}: {strategy.num_replicas_in_sync} replica(s)"


class NoDistribution(Distribution):
    name = "none"


class Mirrored(Distribution):
    """Synchronous data parallelism over this machine's GPUs (all-reduce of the gradients).

    Without GPUs it mirrors over the logical CPU devices, if more than one is configured
    (`tf.config.set_logical_device_configuration`): the tests' way to run two replicas on a CPU.
    """

    name = "mirrored"

    def strategy(self) -> tf.distribute.Strategy:
        if tf.config.list_logical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(cpus)


class MultiWorker(Distribution):
    """Synchronous data parallelism over the machines of TF_CONFIG (collective all-reduce).

    Every machine runs the same command with its own TF_CONFIG; the strategy must be made before
    TensorFlow runs any op, so `attend train` makes it first.
    """

    name = "multi_worker"
    runs_fit = False

    def strategy(self) -> tf.distribute.Strategy:
        self.role()  # a clear error for a missing or malformed TF_CONFIG, before TensorFlow's own
        return tf.distribute.MultiWorkerMirroredStrategy()


class Tpu(Distribution):
    """TPUStrategy on a Cloud TPU (`train.tpu`: its name or address; empty: this TPU VM's own).

    Untested here: TensorFlow 2.21's wheels on PyPI have no TPU runtime, and no TPU is at hand. The
    pipeline pads every batch to its length bucket's bound and drops partial batches (static
    shapes), and `train.steps_per_execution` runs many steps per call, as TPUs need.
    """

    name = "tpu"
    static_shapes = True

    def strategy(self) -> tf.distribute.Strategy:
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=self.train.tpu or None)
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as error:
            raise ValueError(
                f"train.distribution=tpu found no TPU ({type(error).__name__}: {error}). It needs a Cloud "
                "TPU VM with TensorFlow's TPU build, or train.tpu=NAME_OR_ADDRESS; elsewhere use "
                "train.distribution=auto"
            ) from None
        return tf.distribute.TPUStrategy(resolver)


DISTRIBUTIONS: dict[str, type[Distribution]] = {
    kind.name: kind for kind in (NoDistribution, Mirrored, MultiWorker, Tpu)
}


def resolve_distribution(train: TrainConfig) -> Distribution:
    """The Distribution for `train.distribution`; `auto` mirrors over more than one visible GPU."""
    name = train.distribution
    if name == "auto":
        name = "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "none"
    return DISTRIBUTIONS[name](train)
