"""The `attend` command as a user runs it: resume, refusals, clear errors (the README's command
table end to end: tests/test_readme.py)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from tests.conftest import tiny_overrides

ENVIRONMENT = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


def attend(*args: str, input: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        input=input,
        capture_output=True,
        text=True,
        env=ENVIRONMENT,
        cwd=cwd,
        timeout=900,  # a hang, not a slow machine: `bench --quick` takes 5-10 minutes on 2 loaded cores
        check=False,
    )


def attend_here(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    """`attend ARGS` through the same entry point (`app.cli.main`), in this process: the same exit
    status and output as `attend` without an interpreter and TensorFlow start-up per call. For
    refusals and short commands; `attend` (a real process) where the process itself matters."""
    from app.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    stdin_stream = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    with (
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
        mock.patch.object(sys, "stdin", stdin_stream),
    ):
        try:
            status = main(list(args))
        except SystemExit as exit:  # argparse's refusals
            status = exit.code
    return subprocess.CompletedProcess(["attend", *args], status, stdout.getvalue(), stderr.getvalue())


def train_arguments(tmp_path: Path, *options: str, **overrides: object) -> list[str]:
    """`attend train` of the smoke preset on the fixture corpus, in `tmp_path/run`."""
    return [
        "train",
        "--preset",
        "smoke",
        "--run-dir",
        str(tmp_path / "run"),
        "--data-dir",
        str(tmp_path / "data"),
        *options,
        *tiny_overrides(**overrides),
    ]


def summary_tags(log_dir: Path) -> set[str]:
    """Every summary tag TensorBoard finds under a run's log folder (scalars, text, images, hparams)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for folder in {events.parent for events in log_dir.rglob("events.out.tfevents.*")}:
        accumulator = EventAccumulator(str(folder))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["tensors"]) | set(accumulator.Tags()["scalars"])
    return tags


def test_bad_requests_get_clear_errors(tmp_path):
    unknown = attend_here("train", "--preset", "no-such-preset", "--run-dir", str(tmp_path / "r"))
    assert unknown.returncode == 2 and "available presets" in unknown.stderr
    override = attend_here("prepare", "--preset", "smoke", "train.epocs=1")
    assert override.returncode == 2 and "Unknown key(s) ['epocs']" in override.stderr
    missing = attend_here("translate", str(tmp_path), "hola")
    assert missing.returncode == 2 and "No SavedModel" in missing.stderr
    corpus = attend_here(
        "prepare",
        "--preset",
        "smoke",
        "--data-dir",
        str(tmp_path),
        "data.corpus=tsv",
        f"data.tsv_path={tmp_path / 'missing.tsv'}",
    )
    assert corpus.returncode == 2 and "missing.tsv" in corpus.stderr


def test_every_command_explains_its_options():
    for command in ("prepare", "train", "export", "translate", "evaluate", "compare"):
        shown = attend(command, "--help")
        assert shown.returncode == 0 and "usage: attend " + command in shown.stdout


@pytest.mark.slow
def test_bfloat16_training_exports_a_float32_translator(tmp_path):
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (the SentencePiece ops)

    options = {
        "train.precision": "mixed_bfloat16",
        "train.epochs": 1,
        "train.steps_per_epoch": 3,
        "train.bleu_sentences": 0,
    }
    trained = attend(*train_arguments(tmp_path, **options))
    assert trained.returncode == 0, trained.stderr[-3000:]
    export = tmp_path / "run" / "export"
    assert json.loads((export / "model_card.json").read_text())["training_policy"] == "mixed_bfloat16"
    graph = tf.saved_model.load(str(export)).signatures["serving_default"].graph.as_graph_def()
    dtypes = {
        attr.type
        for function in graph.library.function
        for node in function.node_def
        for attr in node.attr.values()
    }
    assert tf.float32.as_datatype_enum in dtypes and tf.bfloat16.as_datatype_enum not in dtypes


def test_a_second_train_on_a_busy_run_folder_is_refused_with_the_holders_pid(tmp_path):
    from app.run import RunDir

    with RunDir(tmp_path / "run").lock(create=True):
        refused = attend_here(*train_arguments(tmp_path))
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert f"in use by another attend process (pid {os.getpid()})" in refused.stderr
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_a_split_emptied_by_the_length_filter_stops_before_anything_is_written(tmp_path):
    stopped = attend_here(*train_arguments(tmp_path, **{"train.max_source_tokens": 2}))
    assert stopped.returncode == 2, stopped.stderr[-2000:]
    assert "After the length filter the train split has 0 of" in stopped.stderr
    assert "train.max_source_tokens" in stopped.stderr and "Traceback" not in stopped.stderr
    assert not (tmp_path / "run" / "config.yaml").exists()  # a corrected run can use the folder


def test_help_shows_the_effective_settings_of_the_preset():
    shown = attend("train", "--help").stdout
    assert "train.epochs=7" in shown  # the default preset's own value
    assert "model.dropout=0.1" in shown  # a config default the preset leaves alone
    assert "train.epochs=5" in attend("train", "--preset", "smoke", "--help").stdout


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["translate", "RUN", "--nbest", "3", "Dios es amor."], {"nbest": 3, "sentences": ["Dios es amor."]}),
        (["translate", "RUN", "Dios es amor.", "--nbest", "3"], {"nbest": 3, "sentences": ["Dios es amor."]}),
        (["translate", "RUN", "--plot", "out.png", "Hola.", "Adiós."], {"sentences": ["Hola.", "Adiós."]}),
        (["translate", "RUN", "Hola.", "--plot", "out.png", "Adiós."], {"sentences": ["Hola.", "Adiós."]}),
        (["translate", "RUN", "--nbest", "2", "--", "-5 grados"], {"nbest": 2, "sentences": ["-5 grados"]}),
        (
            ["train", "--preset", "smoke", "train.epochs=1", "--run-dir", "r", "model.units=8"],
            {"overrides": ["train.epochs=1", "model.units=8"], "run_dir": Path("r")},
        ),
        (
            ["prepare", "train.epochs=1", "--preset", "smoke"],
            {"preset": "smoke", "overrides": ["train.epochs=1"]},
        ),
        (
            ["bench", "train.epochs=1", "--quick", "model.units=8"],
            {"quick": True, "overrides": ["train.epochs=1", "model.units=8"]},
        ),
        (["compare", "a", "--beam", "2", "b"], {"beam": 2, "run_dirs": [Path("a"), Path("b")]}),
    ],
)
def test_options_may_come_before_between_or_after_the_positionals(arguments, expected):
    from app.cli import build_parser

    parsed = vars(build_parser().parse_args(arguments))
    assert {key: parsed[key] for key in expected} == expected
    if arguments[0] == "translate":
        assert parsed["model"] == Path("RUN")


def test_an_option_before_the_sentences_reaches_the_translation(trained_run):
    """As a user types it: the option first, then the sentence (argparse alone refuses the sentence)."""
    ordered = attend_here("translate", str(trained_run), "--nbest", "2", "Dios es amor.")
    assert ordered.returncode == 0, ordered.stderr[-2000:]
    lines = ordered.stdout.splitlines()
    # two hypotheses of sentence 0, as `index ||| translation ||| log-prob`
    assert len(lines) == 2 and all(line.startswith("0 ||| ") and line.count(" ||| ") == 2 for line in lines)


@pytest.mark.slow
def test_training_into_a_file_writes_a_line_per_epoch_not_a_redrawn_bar(tmp_path):
    """A log file, nohup or a cluster job: no progress bar redrawn at every step."""
    environment = {key: value for key, value in ENVIRONMENT.items() if key != "ATTEND_PROGRESS"}
    options = {"train.epochs": 3, "train.steps_per_epoch": 4, "train.bleu_sentences": 0}
    log = tmp_path / "train.log"
    with log.open("w") as stdout:
        trained = subprocess.run(
            [sys.executable, "-m", "app", *train_arguments(tmp_path, "--no-export", **options)],
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
            timeout=900,
            check=False,
        )
    assert trained.returncode == 0, trained.stderr[-3000:]
    text = log.read_text()
    assert "\r" not in text and "\x1b" not in text and "━" not in text
    lines = text.splitlines()
    assert [line for line in lines if line.startswith("Epoch ")] == ["Epoch 1/3", "Epoch 2/3", "Epoch 3/3"]
    summaries = [line for line in lines if line.startswith("4/4 - ")]
    assert len(summaries) == 3 and all("loss: " in line and "val_loss: " in line for line in summaries)
