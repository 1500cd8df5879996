"""What TensorBoard shows of a trained run: the kept checkpoint's scores in HParams, one point per
epoch, metrics apart from histograms, the landing charts, sample translations that render."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util

from app.recipe.callbacks import HPARAMS_SHOWN, markdown_cell
from app.run import RunDir


def accumulators(log_dir: Path) -> dict[str, EventAccumulator]:
    """`{run: its events}` of every TensorBoard run (folder) under `log_dir` ("." is the top)."""
    found = {}
    for folder in sorted({events.parent for events in log_dir.rglob("events.out.tfevents.*")}):
        accumulator = EventAccumulator(str(folder), size_guidance={"tensors": 0, "scalars": 0})
        accumulator.Reload()
        found[str(folder.relative_to(log_dir))] = accumulator
    return found


def values(accumulator: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [
        (event.step, float(tensor_util.make_ndarray(event.tensor_proto)))
        for event in accumulator.Tensors(tag)
    ]


@pytest.mark.slow
def test_hparams_report_the_kept_checkpoint_not_the_last_epoch(trained_run):
    run = RunDir(trained_run)
    best = run.best_score()
    top = accumulators(run.logs_dir)["."]
    assert values(top, "kept/val_bleu")[-1][1] == pytest.approx(best["value"])
    assert values(top, "kept/epoch")[-1][1] == best["epoch"]
    assert values(top, "kept/val_loss")[-1][1] == pytest.approx(best["metrics"]["val_loss"])
    content = top.SummaryMetadata("_hparams_/experiment").plugin_data.content
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content).experiment
    assert [metric.name.tag for metric in experiment.metric_infos] == [
        "kept/val_bleu",
        "kept/val_loss",
        "kept/val_perplexity",
        "kept/epoch",
    ]
    ticked = sorted(info.name for info in experiment.hparam_infos if info.differs)
    assert ticked == sorted(HPARAMS_SHOWN) and len(experiment.hparam_infos) > len(ticked)
    content = top.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    settings = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert settings["model.units"].string_value == "32"  # shown as written, not as 32.000
    assert settings["train.learning_rate"].number_value == pytest.approx(0.005)


@pytest.mark.slow
def test_one_point_per_epoch_and_histograms_apart_from_the_metrics(trained_run):
    runs = accumulators(RunDir(trained_run).logs_dir)
    epochs = RunDir(trained_run).config().train.epochs
    assert [step for step, _ in values(runs["validation"], "epoch_bleu")] == list(range(epochs))
    assert [step for step, _ in values(runs["validation"], "epoch_loss")] == list(range(epochs))
    # dev perplexity each epoch: exp of the token-pooled cross-entropy (the loss is a mean of batch
    # means, so the two agree closely, not exactly)
    dev_losses = [loss for _, loss in values(runs["validation"], "epoch_loss")]
    dev_perplexities = [value for _, value in values(runs["validation"], "epoch_perplexity")]
    assert len(dev_perplexities) == epochs
    for loss, value in zip(dev_losses, dev_perplexities, strict=True):
        assert value == pytest.approx(math.exp(loss), rel=0.15)
    tags = {tag for accumulator in runs.values() for tag in accumulator.Tags()["tensors"]}
    assert not [tag for tag in tags if tag.startswith("evaluation_")]  # Keras's duplicate dev points
    histograms = {tag for tag in tags if tag.endswith("/histogram")}
    assert histograms and all(tag.startswith("weights/") for tag in histograms)


@pytest.mark.slow
def test_the_landing_charts_show_train_and_dev_loss_and_the_kept_bleu(trained_run):
    top = accumulators(RunDir(trained_run).logs_dir)["."]
    layout = layout_pb2.Layout.FromString(
        top.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0]
    )
    charts = {chart.title: list(chart.multiline.tag) for chart in layout.category[0].chart}
    assert charts["loss: train and dev"] == [r"^epoch_loss$"]
    assert charts["perplexity: train and dev"] == [r"^epoch_perplexity$"]
    assert charts["dev BLEU, and the kept checkpoint's"] == [r"^epoch_bleu$", r"^kept/val_bleu$"]


def test_sample_sentences_never_break_their_table_row():
    cell = markdown_cell("a | b *bold* _x_ <i>tag</i> `code`\nnext [link](u) # ~")
    assert "\n" not in cell and cell.count("|") == cell.count("\\|") == 1
    for special in "*_<>`[]#~":
        assert cell.count(special) == cell.count("\\" + special), special
