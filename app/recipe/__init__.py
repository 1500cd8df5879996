"""The training recipe that `attend train` and `attend bench` share: datasets, optimizer, compiled
model and callbacks. Activities compose it with a run folder; nothing here owns paths or prints.

The modules, each named for what it holds:

    datasets        train and dev batches, a worker's shard, the batch's split over replicas
    compile         learning-rate schedule, optimizer, the model compiled in a strategy's scope
    callback_list   the callbacks of a run in the order that matters, wired to its run folder
    early_stopping  patience counted from the kept checkpoint (so a resumed run stops on time)
    callbacks       the callbacks beyond Keras's own (divergence guard, best checkpoint, time budget, …)
    perplexity      held-out perplexity
    schedule, optimizer, distribution, strategy_loop, transfer, embeddings: see their docstrings

This face re-exports what the activities use, so they import `from app.recipe import …`.
"""

from app.recipe.callback_list import TrainingRun, make_callbacks, make_time_budget
from app.recipe.compile import (
    NO_WEIGHT_DECAY,
    compile_model,
    learning_rate_schedule,
    make_optimizer,
    schedule_of,
)
from app.recipe.datasets import (
    MEMORY_CACHE_PAIRS,
    check_batch_divides,
    epoch_steps,
    make_datasets,
    make_dev_set,
    make_train_set,
    mean_pairs_per_batch,
    shard_input_function,
)
from app.recipe.early_stopping import CheckpointEarlyStopping, early_stopping_start
from app.recipe.perplexity import held_out_perplexity

__all__ = [
    "MEMORY_CACHE_PAIRS",
    "NO_WEIGHT_DECAY",
    "CheckpointEarlyStopping",
    "TrainingRun",
    "check_batch_divides",
    "compile_model",
    "early_stopping_start",
    "epoch_steps",
    "held_out_perplexity",
    "learning_rate_schedule",
    "make_callbacks",
    "make_datasets",
    "make_dev_set",
    "make_optimizer",
    "make_time_budget",
    "make_train_set",
    "mean_pairs_per_batch",
    "schedule_of",
    "shard_input_function",
]
