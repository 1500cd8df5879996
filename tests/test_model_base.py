"""The TF Serving model base: `BASE/NAME/<version>/`, what counts as a version, safe names, and
`attend export --model-base` publishing each version whole or not at all."""

from __future__ import annotations

import json
import threading
import time

import pytest

from app import translator as translator_module
from app.export import export_run
from app.model_base import ModelBase, check_model_name
from tests.test_cli import attend_here
from tests.test_export import jit_compiled_functions


def saved_model(directory):
    directory.mkdir(parents=True)
    (directory / "saved_model.pb").write_bytes(b"")
    return directory


def test_versions_are_integer_named_folders_holding_a_saved_model(tmp_path):
    base = ModelBase(tmp_path, "es-en")
    assert base.versions() == [] and base.latest() is None
    for name in ("1", "10", "2", "007"):
        saved_model(tmp_path / "es-en" / name)
    saved_model(tmp_path / "es-en" / "3.staging")  # an export in progress
    saved_model(tmp_path / "es-en" / "-4")
    saved_model(tmp_path / "es-en" / "v5")
    (tmp_path / "es-en" / "99").mkdir()  # no SavedModel (yet)
    assert base.versions() == [1, 2, 7, 10]
    assert base.latest() == 10


@pytest.mark.parametrize("name", ["es-en", "model_1", "Attend.v2", "x"])
def test_model_names_that_are_one_safe_path_segment_are_accepted(name):
    assert check_model_name(name) == name


@pytest.mark.parametrize(
    "name", ["", ".", "..", "../etc", "a/b", "a\\b", "-x", ".hidden", "é", "a b", "x" * 129]
)
def test_model_names_that_could_leave_the_base_or_break_a_url_are_refused(name):
    with pytest.raises(ValueError, match="invalid model name"):
        check_model_name(name)


def test_next_version_follows_the_highest_number_and_exports_take_turns(tmp_path):
    base = ModelBase(tmp_path, "m")
    saved_model(tmp_path / "m" / "4")
    (tmp_path / "m" / "6").mkdir()  # a number once used is never reused
    taken, order = [], []

    def publish(label: str) -> None:
        with base.next_version() as (version, directory):
            order.append(f"{label} start")
            time.sleep(0.2)
            saved_model(directory)
            taken.append(version)
            order.append(f"{label} end")

    threads = [threading.Thread(target=publish, args=(label,)) for label in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken) == [7, 8]
    assert order[0].endswith("start") and order[1].endswith("end")  # one at a time, never interleaved
    assert base.versions() == [4, 7, 8]


@pytest.mark.slow
def test_export_publishes_a_version_with_the_xla_attribute_on_request(trained_run, tmp_path):
    base, logged = tmp_path / "base", []
    (base / "bible" / "4").mkdir(parents=True)  # a number once used (even without a SavedModel) is not reused
    directory = export_run(trained_run, model_base=base, name="bible", xla=True, log=logged.append)

    assert directory == base / "bible" / "5"
    assert sorted(p.name for p in (base / "bible").iterdir()) == [".publish.lock", "4", "5"]
    assert f"Published {trained_run} as version 5 of model 'bible' in {base}" in logged
    assert jit_compiled_functions(directory) != []  # opt-in: translate_ids asks for XLA
    assert jit_compiled_functions(trained_run / "export") == []  # the default: servable by stock TF Serving
    card = json.loads((directory / "model_card.json").read_text())
    assert "SentencepieceTokenizeOp" in card["export"].pop("required_ops")  # see test_export_ops
    assert card["export"] == {
        "xla": True,
        "run": str(trained_run),
        "shortlist": None,  # the whole vocabulary
        "model_name": "bible",
        "version": 5,
    }


@pytest.mark.slow
def test_a_failed_export_leaves_no_half_version_and_takes_no_number(trained_run, tmp_path, monkeypatch):
    base = tmp_path / "base"

    def broken_reload(export_dir, sentences):
        assert (export_dir / "saved_model.pb").is_file() and export_dir.name == "1.staging"
        raise RuntimeError("the reloaded export translates differently")

    monkeypatch.setattr(translator_module, "reload_and_translate", broken_reload)
    with pytest.raises(RuntimeError, match="translates differently"):
        export_run(trained_run, model_base=base, log=lambda *_: None)
    assert sorted(p.name for p in (base / "es-en").iterdir()) == [".publish.lock"]  # the default name
    with ModelBase(base, "es-en").next_version() as (version, _):
        assert version == 1


@pytest.mark.slow
def test_export_refuses_a_bad_name_before_writing_anything(trained_run, tmp_path):
    result = attend_here("export", str(trained_run), "--model-base", str(tmp_path / "b"), "--name", "../up")
    assert result.returncode == 2
    assert "invalid model name '../up'" in result.stderr
    assert not (tmp_path / "b").exists()


def test_a_name_without_a_model_base_is_refused(tmp_path):
    result = attend_here("export", str(tmp_path), "--name", "x")
    assert result.returncode == 2
    assert "--name names the model in a --model-base" in result.stderr
