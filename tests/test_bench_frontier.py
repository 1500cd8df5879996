"""The quality–speed frontier (`python -m app.bench.frontier`): a trained run's exports and the
tutorial's model measured by one harness on the run's test split, written as JSON, a table whose
ratios divide by the tutorial's figures of the same report, and a plot. No timing is asserted."""

from __future__ import annotations

import json

import pytest

from app.bench.frontier import format_frontier, main
from app.run import RunDir
from app.scoring import read_references


def test_the_frontier_measures_a_runs_exports_and_the_tutorial_on_its_test_split(
    trained_run, tmp_path, capsys
):
    out, plot = tmp_path / "frontier.json", tmp_path / "frontier.png"
    data_dir = trained_run.parent / "data"
    arguments = [f"tiny={trained_run}", "--data-dir", str(data_dir), "--exports", "greedy,beam4"]
    assert main([*arguments, "--tutorial-steps", "8", "--quick", "--out", str(out), "--plot", str(plot)]) == 0
    report = json.loads(out.read_text())
    test_file = data_dir / RunDir(trained_run).config().corpus_name / "test.tsv"
    sources, _ = read_references(test_file)
    assert report["test_file"] == str(test_file)
    assert [(point["model"], point["export"]) for point in report["points"]] == [
        ("tiny", "greedy"),
        ("tiny", "beam4"),
        ("tutorial", "greedy"),
    ]
    for point in report["points"]:
        assert point["sentences"] == len(sources)  # the whole split, for every model
        assert 0 <= point["bleu"] <= 100 and point["bleu_ci95"] >= 0
        assert point["sentences_per_s_batch64"] > 0 and point["ms_batch1_p50"] > 0
    tutorial = report["tutorial"]
    # trained for at least the steps asked (and the plan's timed windows), at --quick's size
    assert tutorial["steps"] >= 8 and tutorial["units"] == 32
    assert report["points"][-1]["parameters"] == tutorial["parameters"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capsys.readouterr().out
    assert "| tiny | beam4 |" in table and "| tutorial | greedy |" in table


def test_a_tutorial_trained_before_is_measured_from_its_export(trained_run, tmp_path):
    from app.bench.frontier import train_tutorial

    data_dir = trained_run.parent / "data"
    folder = tmp_path / "tutorial" / "export"
    folder.parent.mkdir()
    trained = train_tutorial(trained_run, data_dir, 8, folder, quick=True)
    out = tmp_path / "frontier.json"
    arguments = [f"tiny={trained_run}", "--data-dir", str(data_dir), "--exports", "greedy"]
    assert main([*arguments, "--tutorial-export", str(folder), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [point["model"] for point in report["points"]] == ["tiny", "tutorial"]
    # the parameters counted from the reloaded export are the trained model's
    assert report["tutorial"]["parameters"] == report["points"][1]["parameters"] == trained["parameters"]


def test_the_tables_ratios_divide_by_the_tutorials_figures():
    point = {"parameters": 10, "bleu_ci95": 1.0, "export": "greedy"}
    report = {
        "points": [
            {**point, "model": "fast", "bleu": 30.0, "sentences_per_s_batch64": 900.0, "ms_batch1_p50": 4.0},
            {
                **point,
                "model": "tutorial",
                "bleu": 20.0,
                "sentences_per_s_batch64": 300.0,
                "ms_batch1_p50": 8.0,
            },
        ]
    }
    rows = format_frontier(report)
    assert rows[2].endswith("| 3.00 / 0.50 / 1.50 |")
    assert rows[3].endswith("| 1.00 / 1.00 / 1.00 |")
    without = format_frontier({"points": report["points"][:1]})
    assert "tutorial" not in without[0] and without[2].endswith("| 4.0 |")


@pytest.mark.parametrize("argument", ["no-label", "=folder", "label="])
def test_runs_are_named_label_equals_folder(argument, capsys):
    with pytest.raises(SystemExit):
        main([argument])
    assert "LABEL=RUN_DIR" in capsys.readouterr().err
