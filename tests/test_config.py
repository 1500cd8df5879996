"""Presets, typed overrides and the errors a user sees for bad settings."""

from __future__ import annotations

import pytest

from app.config import available_presets, load_config, save_config


def test_presets_load_and_smoke_is_smaller_than_default():
    assert {"default", "smoke"} <= set(available_presets())
    smoke, default = load_config("smoke"), load_config("default")
    assert smoke.model.units < default.model.units
    assert default.data.corpus == "bible" and (default.data.source_bible, default.data.target_bible) == (
        "v",
        "4",
    )


def test_overrides_are_typed():
    config = load_config("smoke", ["train.epochs=7", "model.attention_style=luong", "train.jit_compile=true"])
    assert (
        config.train.epochs == 7
        and config.model.attention_style == "luong"
        and config.train.jit_compile is True
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epocs=3", "Unknown key"),
        ("training.epochs=3", "Unknown config section"),
        ("model.cell=rnn", "model.cell='rnn' is not one of"),
        ("epochs=3", "section.key=value"),
        ("data.corpus=tsv", "needs data.tsv_path"),
    ],
)
def test_bad_settings_are_explained(override, message):
    with pytest.raises(ValueError, match=message):
        load_config("smoke", [override])


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(ValueError, match="available presets: .*smoke"):
        load_config("nonexistent")


def test_saved_config_reloads_identically(tmp_path):
    config = load_config("smoke", ["train.epochs=3"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(str(tmp_path / "config.yaml")) == config
