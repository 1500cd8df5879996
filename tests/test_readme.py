"""Every command of the README's command table, run as written in a fresh folder on the default
(`bible`) corpus at smoke sizes: a documented command that crashes fails CI. The outputs a user
would look at are checked here too (run folder, TensorBoard, translations, scores, bench report)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import write_bible_db
from tests.serving import Server, http
from tests.test_bench import assert_ratios_to_the_tutorial
from tests.test_cli import attend, summary_tags

README = Path(__file__).parents[1] / "README.md"
# What a user types for each placeholder of the table (smoke sizes; RUN_DIR is the trained run).
TYPED = {  # in order: the longer placeholders first
    " [--force] [--model-base BASE] [--name NAME] [--xla] [--shortlist]": "",
    " [--ensemble RUN_DIR2 … \\| --ensemble-last N] [--out DIR]": "",
    " [--rest-port 8501] [--grpc-port 8500]": " --rest-port 0 --grpc-port 0",
    " --bible CODE --out FILE.txt [--preset NAME]": " --bible 4 --out mono.txt --preset smoke",
    "REVERSE_RUN MONOLINGUAL.txt --out SYNTHETIC.tsv [--sample \\| --beam K] [--batch-size N]": (
        "RUN_DIR mono.txt --out synthetic.tsv --sample"
    ),
    "TEACHER_RUN [--preset fast] [--beam K] [--references W] [--run-dir DIR] [--max-minutes M]": (
        "RUN_DIR --preset smoke --beam 1 --run-dir student train.epochs=1"
    ),
    "NAME": "smoke",
    "[--run-dir DIR] [--profile] [section.key=value ...]": "train.epochs=2",
    '"sentence" … [--plot out.png]': '"Y lloró Jesús." Hola --plot out.png',
    "[--split test] [--beam K] [--source FILE.tsv] [--shortlist]": "--split test --beam 1 --shortlist",
    " [FILE.tsv] [--batch-size N]": " pairs.tsv",
    "RUN_DIR … --out FIG.png": "RUN_DIR RUN_DIR --out fig.png",
    " [--last N] [--out DIR]": " --last 2",
    "[--quick] [--serve-run RUN_DIR]": "--quick",
}
PAIRS = "Y lloró Jesús.\tJesus wept.\nHola.\tHello.\n"
COMMANDS = [
    "prepare",
    "train",
    "export",
    "translate",
    "score",
    "monolingual",
    "backtranslate",
    "distill",
    "evaluate",
    "compare",
    "average",
    "serve",
    "bench",
]


def readme_commands() -> list[str]:
    return re.findall(r"^\| `(attend [^`]+)` \|", README.read_text(encoding="utf-8"), re.MULTILINE)


def as_typed(command: str, run_dir: str) -> list[str]:
    for placeholder, typed in TYPED.items():
        command = command.replace(placeholder, typed)
    command = command.replace("RUN_DIR", run_dir)
    assert not re.search(r"\[|…|[A-Z]{3,}", command), f"a placeholder is left in {command!r}"
    return shlex.split(command)[1:]


@pytest.fixture(scope="module")
def readme_session(tmp_path_factory) -> tuple[Path, dict]:
    """Runs the table's commands in order in a fresh folder; returns it and each command's result."""
    folder = tmp_path_factory.mktemp("fresh")
    write_bible_db(folder / "data")
    (folder / "pairs.tsv").write_text(PAIRS, encoding="utf-8")  # what `attend score` is given
    results, run_dir = {}, ""
    for command in readme_commands():
        arguments = as_typed(command, run_dir)
        if arguments[0] == "serve":  # runs until stopped: asked one thing, then stopped as a service is
            with Server(*arguments[1:], cwd=folder) as server:
                results["serve"] = http(
                    "POST", f"{server.rest}/v1/models/es-en:predict", {"instances": ["Hola"]}
                )
                assert server.stop() == 0, server.log()
            continue
        results[arguments[0]] = completed = attend(*arguments, cwd=folder)
        assert completed.returncode == 0, f"{command}:\n{completed.stderr[-3000:]}"
        if arguments[0] == "train":
            (run,) = (folder / "models").glob("smoke-*")
            run_dir = str(run.relative_to(folder))
    return folder / run_dir, results


@pytest.mark.slow
def test_the_table_lists_every_command_once(readme_session):
    _, results = readme_session
    assert [command.split()[1] for command in readme_commands()] == COMMANDS
    assert list(results) == COMMANDS


@pytest.mark.slow
def test_train_writes_the_run_folder_and_tensorboard(readme_session):
    run_dir, results = readme_session
    for path in ("config.yaml", "vocab/source.model", "checkpoints/best.weights.h5", "metrics.json"):
        assert (run_dir / path).is_file(), path
    assert not (run_dir / "backup").exists()  # a finished run leaves nothing to resume
    trained = results["train"].stdout
    assert "translation:" in trained and "Exported the SavedModel" in trained
    card = json.loads((run_dir / "model_card.json").read_text())
    train_filter = card["data"]["length_filter"]["train"]
    assert (
        train_filter["kept"] + train_filter["source_too_long"] + train_filter["target_too_long"]
        == (train_filter["pairs"])
    )
    assert f"train: {train_filter['kept']:,} of {train_filter['pairs']:,} pairs kept" in trained
    assert f"Training on {train_filter['kept']:,} pairs" in trained
    relative = run_dir.relative_to(run_dir.parents[1])  # what the user typed: models/smoke-<timestamp>
    assert f"tensorboard --logdir {relative / 'logs'}" in trained  # what to do next, with real paths
    assert f"attend evaluate {relative} --split test" in trained
    assert "its translations are not meant to be good" in trained  # a smoke model says so
    assert "Precision: float32 (train.precision)" in trained  # what the smoke preset's precision resolved to
    expected = {
        "epoch_loss",
        "epoch_token_accuracy",
        "epoch_perplexity",
        "epoch_learning_rate",
        "epoch_bleu",
        "dev_translations",
        "attention/dev_0",
        "_hparams_/session_start_info",
    }
    assert expected <= summary_tags(run_dir / "logs")


@pytest.mark.slow
def test_translate_answers_arguments_and_stdin_alike_and_plots(readme_session):
    run_dir, results = readme_session
    by_argument = results["translate"].stdout.splitlines()
    assert len(by_argument) == 2  # (a 2-epoch smoke model may still answer with an empty line)
    by_stdin = attend("translate", str(run_dir / "export"), input="Y lloró Jesús.\n\nHola\n")
    assert by_stdin.stdout.splitlines()[0] == by_argument[0] and len(by_stdin.stdout.splitlines()) == 3
    for name in ("out.png", "out-2.png"):
        assert (run_dir.parents[1] / name).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_score_prints_a_log_probability_and_its_per_piece_mean_per_pair(readme_session):
    _, results = readme_session
    rows = [line.split("\t") for line in results["score"].stdout.splitlines()]
    assert len(rows) == len(PAIRS.splitlines()) and all(len(row) == 2 for row in rows)
    for total, normalised in ((float(total), float(normalised)) for total, normalised in rows):
        assert total < 0 and total <= normalised < 0  # log-probabilities; at least one piece (the end)


@pytest.mark.slow
def test_evaluate_and_compare_write_scores_and_figures(readme_session):
    run_dir, results = readme_session
    evaluation = run_dir / "evaluation" / "test-beam1-shortlist"  # typed with --shortlist
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert (
        f"BLEU {metrics['bleu']:.2f}" in results["evaluate"].stdout and "nrefs" in results["evaluate"].stdout
    )
    assert metrics["shortlist"] is True
    assert metrics["sentences"] == len((evaluation / "hypotheses.txt").read_text().splitlines())
    assert (run_dir.parents[1] / "fig.png").read_bytes()[:4] == b"\x89PNG"
    assert f"perplexity {metrics['perplexity']:.2f}" in results["evaluate"].stdout
    averaged = run_dir.with_name(f"{run_dir.name}-avg2")  # `attend average RUN --last 2` of 2 epochs
    assert "Averaged epochs 1, 2 of" in results["average"].stdout
    assert (averaged / "checkpoints" / "best.weights.h5").is_file() and (averaged / "vocab").is_dir()


@pytest.mark.slow
def test_serve_answers_as_translate_does(readme_session):
    _, results = readme_session
    status, answer = results["serve"]
    assert status == 200
    assert answer["predictions"][0]["translation"] == results["translate"].stdout.splitlines()[1]  # "Hola"


@pytest.mark.slow
def test_export_replaced_the_trained_export_atomically(readme_session):
    run_dir, results = readme_session
    assert "Exported the SavedModel" in results["export"].stdout
    assert not (run_dir / "export.staging").exists() and not (run_dir / "export.previous").exists()
    again = attend("translate", str(run_dir), "Y lloró Jesús.", "Hola")
    assert again.stdout == results["translate"].stdout


@pytest.mark.slow
def test_quick_bench_on_the_bible_corpus_writes_a_sane_report(readme_session):
    """The quick bench's 500-piece vocabularies need longer pairs than the preset's 12 tokens: on the
    Bible it crashed on an empty dev split before the limits followed the vocabulary."""
    run_dir, results = readme_session
    report = json.loads((run_dir.parents[1] / "bench.json").read_text())
    pairs = report["pairs"]
    assert pairs["max_source_tokens"] > 12 and pairs["max_target_tokens"] > 12  # raised from the preset's
    assert pairs["train_pairs"] >= 256 and pairs["dev_pairs"] >= 32
    stdout = results["bench"].stdout
    assert f"training pairs: {pairs['train_pairs']:,}" in stdout
    assert set(report["train"]) == {
        "bahdanau/float32",
        "bahdanau/mixed_bfloat16",
        "additive_after/float32",
        "luong/float32",
    }
    for row in report["train"].values():
        assert row["train_target_tokens_per_s"] > row["train_examples_per_s"] > 0
        tokens = row["train_examples_per_s"] * row["mean_target_tokens"]
        assert row["train_target_tokens_per_s"] == pytest.approx(tokens, rel=0.01)
        achieved = row["train_examples_per_s"] * row["model_gflop_per_example"]
        assert row["achieved_gflops"] == pytest.approx(achieved, rel=0.02)
        assert row["utilization"] == pytest.approx(
            row["achieved_gflops"] / row["matmul_peak_gflops"], rel=0.02
        )
        assert 0 < row["utilization"] < 1 and row["matmul_peak_gflops"] > row["achieved_gflops"] > 0
        assert (
            row["time_to_first_step_s"] > 0 and row["peak_rss_mb"] > 100 and row["dev_loss_after_steps"] > 0
        )
        assert row["mean_source_tokens"] <= pairs["max_source_tokens"]  # trained on the chosen pairs
    decode = report["decode"]
    assert (
        decode["buckets"]["short"]["sentences"] > 0 and decode["buckets"]["short"]["mean_source_tokens"] <= 10
    )
    for name in ("greedy", "beam4", "greedy_xla", "beam4_xla", "greedy_shortlist", "beam4_shortlist"):
        assert decode["exports"][name]["first_call_s"] > 0
        for bucket, info in decode["buckets"].items():
            if not info["sentences"]:
                continue
            speed = decode[f"{name}_{bucket}"]
            assert list(speed["batches"]) == ["1", "8", "64", "256"]
            for row in speed["batches"].values():
                assert row["target_tokens_per_s"] > row["sentences_per_s"] > 0
                assert 0 < row["latency_ms_p50"] <= row["latency_ms_p90"]
    assert report["decode_short_greedy_b64_sent_per_s"] == max(
        decode[f"{name}_short"]["sentences_per_s_batch64"]
        for name in ("greedy", "greedy_xla", "greedy_shortlist")
    )
    assert report["decode_short_greedy_b1_p50_ms"] > 0 and report["decode_short_beam4_over_greedy_b64"] > 0
    assert report["train_bahdanau_best_examples_per_s"] == max(
        report["train"][key]["train_examples_per_s"]
        for key in ("bahdanau/float32", "bahdanau/mixed_bfloat16")
    )
    assert len(report["targets"]) == 2 + len(decode["buckets"]) + 2 and "short, batch 1: p50 ms" in stdout
    assert_ratios_to_the_tutorial(report)  # the tutorial trained and timed in the same run
    assert "tutorial_short" in stdout and "CPU: " in stdout
    # what the host allows each target: rates measured in the decode phase, sizes from the model cards
    assert decode["matmul_peak_gflops"] > 0 and decode["matvec_gbytes_per_s"] > 0
    for name in ("greedy_shortlist", "beam4_shortlist"):
        vocab = decode["exports"][name]["target_vocab"]
        assert all(4 < count <= vocab for count in decode[f"{name}_short"]["mean_candidates"].values())
    bounded = [row for row in report["targets"] if "bound" in row]
    assert len(bounded) == 3 and all(row["bound"]["value"] > 0 for row in bounded)
    assert "this host's ceiling" in stdout and "this host's floor" in stdout
    for server in ("batching", "no_batching"):  # the loopback load test of `attend serve`
        load = report["serve"]["servers"][server]
        assert load["exit_status"] == 0 and load["peak_rss_mb"] > 100
        assert [row["clients"] for row in load["load"]] == [1, 8, 64]
        for row in load["load"]:
            assert row["requests"] > 0 and row["errors"] == 0
            assert 0 < row["latency_ms_p50"] <= row["latency_ms_p90"] <= row["latency_ms_p99"]
    assert report["serve"]["servers"]["batching"]["load"][-1]["mean_batch_size"] > 1  # requests were merged
    assert report["serve"]["goals"]["errors"] == 0
    assert report["serve_model"]["steps"] == 5 and report["serve_model"]["dev_loss"] > 0  # its own model
    assert "bahdanau/float32" in stdout and "sent/s" in stdout and "decoder recurrence" in stdout
