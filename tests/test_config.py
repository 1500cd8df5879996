"""Presets, typed overrides and the errors a user sees for bad settings."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from app.config import (
    MINIMUM_VOCAB_SIZE,
    RANGES,
    Config,
    available_presets,
    from_dict,
    load_config,
    save_config,
)

SECTIONS = "(data, tokenizer, model, train, decode)"


def test_presets_load_and_smoke_is_smaller_than_default():
    assert {"default", "smoke"} <= set(available_presets())
    smoke, default = load_config("smoke"), load_config("default")
    assert smoke.model.units < default.model.units
    assert default.data.corpus == "bible" and (default.data.source_bible, default.data.target_bible) == (
        "v",
        "4",
    )


@pytest.mark.parametrize("preset", available_presets())
def test_every_preset_loads_and_reloads_identically(preset, tmp_path):
    config = load_config(preset)
    save_config(config, tmp_path / "config.yaml")
    assert load_config(str(tmp_path / "config.yaml")) == config


def test_overrides_are_typed():
    config = load_config("smoke", ["train.epochs=7", "model.attention_style=luong", "train.jit_compile=true"])
    assert (
        config.train.epochs == 7
        and config.model.attention_style == "luong"
        and config.train.jit_compile is True
    )


@pytest.mark.parametrize(
    ("override", "section", "key", "expected"),
    [
        # numbers as users write them (YAML 1.1 alone reads these as strings)
        ("train.learning_rate=1e-4", "train", "learning_rate", 1e-4),
        ("train.learning_rate=5e-3", "train", "learning_rate", 5e-3),
        ("decode.max_length_ratio=1e6", "decode", "max_length_ratio", 1e6),
        ("train.clipnorm=1.5E+3", "train", "clipnorm", 1500.0),
        ("train.learning_rate=.5e-2", "train", "learning_rate", 0.005),
        ("train.learning_rate='2e-4'", "train", "learning_rate", 2e-4),  # quoted: a numeric string
        ("train.clipnorm=2", "train", "clipnorm", 2.0),  # an int for a float setting
        ("train.epochs=1_000", "train", "epochs", 1000),
        # text settings keep what the user wrote
        ("data.target_bible=4", "data", "target_bible", "4"),
        ("data.source_language=no", "data", "source_language", "no"),  # not YAML 1.1's False
        ("data.source_bible=2024-01-01", "data", "source_bible", "2024-01-01"),  # not a date
        ("data.tsv_path=[x.tsv", "data", "tsv_path", "[x.tsv"),  # not YAML at all: kept as text
        # empty and null values
        ("data.tsv_path=", "data", "tsv_path", None),
        ("data.max_pairs=~", "data", "max_pairs", None),
        ("train.steps_per_epoch=null", "train", "steps_per_epoch", None),
        ("train.profile_batches=", "train", "profile_batches", ""),  # empty means off
        ("train.jit_compile=False", "train", "jit_compile", False),
    ],
)
def test_values_are_converted_to_their_fields_types(override, section, key, expected):
    value = getattr(getattr(load_config("smoke", [override]), section), key)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=abc", "train.epochs: expected an integer, got 'abc'"),
        ("train.epochs=1.5", "train.epochs: expected an integer, got 1.5"),
        ("train.epochs=true", "train.epochs: expected an integer, got True"),
        ("train.epochs=[1, 2]", "train.epochs: expected an integer, got [1, 2]"),
        ("train.epochs=", "train.epochs: expected an integer, got None"),
        ("train.learning_rate=fast", "train.learning_rate: expected a number, got 'fast'"),
        ("train.learning_rate=true", "train.learning_rate: expected a number, got True"),
        ("train.learning_rate=.inf", "train.learning_rate: expected a finite number, got inf"),
        ("model.dropout=.nan", "model.dropout: expected a finite number, got nan"),
        ("train.jit_compile=1", "train.jit_compile: expected true or false, got 1"),
        ("train.jit_compile=yes", "train.jit_compile: expected true or false, got 'yes'"),
        ("data.swap=", "data.swap: expected true or false, got None"),
        ("data.source_bible=[1, 2]", "data.source_bible: expected a string, got [1, 2]"),
        ("model.cell={a: 1}", "model.cell: expected a string, got {'a': 1}"),
        ("data.corpus=~", "data.corpus: expected a string, got None"),
    ],
)
def test_wrong_types_name_the_setting(override, message):
    with pytest.raises(ValueError) as error:
        load_config("smoke", [override])
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.units=-5", "model.units: expected at least 1, got -5"),
        ("train.epochs=0", "train.epochs: expected at least 1, got 0"),
        ("model.encoder_units=0", "model.encoder_units: expected at least 1, got 0"),
        ("data.max_pairs=0", "data.max_pairs: expected at least 1, got 0"),
        ("data.dev_size=0", "data.dev_size: expected at least 1, got 0"),
        ("train.steps_per_epoch=0", "train.steps_per_epoch: expected at least 1, got 0"),
        ("train.log_every_steps=0", "train.log_every_steps: expected at least 1, got 0"),
        (
            "tokenizer.source_vocab_size=100",
            f"tokenizer.source_vocab_size: expected at least {MINIMUM_VOCAB_SIZE}, got 100",
        ),
        ("decode.max_input_tokens=1", "decode.max_input_tokens: expected at least 2, got 1"),
        ("train.warmup_steps=-1", "train.warmup_steps: expected at least 0, got -1"),
        ("decode.length_penalty_alpha=-0.1", "decode.length_penalty_alpha: expected at least 0, got -0.1"),
        ("train.learning_rate=0", "train.learning_rate: expected greater than 0, got 0.0"),
        ("train.clipnorm=-1", "train.clipnorm: expected greater than 0, got -1.0"),
        ("model.dropout=1", "model.dropout: expected at least 0 and below 1, got 1.0"),
        ("model.dropout=-0.1", "model.dropout: expected at least 0 and below 1, got -0.1"),
        (
            "train.min_learning_rate_ratio=1.5",
            "train.min_learning_rate_ratio: expected between 0 and 1, got 1.5",
        ),
        (
            "tokenizer.character_coverage=0",
            "tokenizer.character_coverage: expected greater than 0 and at most 1, got 0.0",
        ),
        ("train.divergence_factor=0.5", "train.divergence_factor: expected 0 (off) or at least 1, got 0.5"),
        ("train.seed=-1", "train.seed: expected between 0 and 4294967295, got -1"),
    ],
)
def test_out_of_range_values_name_the_setting_and_the_range(override, message):
    with pytest.raises(ValueError) as error:
        load_config("smoke", [override])
    assert str(error.value) == message


@pytest.mark.parametrize(
    "override",
    [
        "model.dropout=0",
        "train.min_learning_rate_ratio=0",
        "train.min_learning_rate_ratio=1",
        "tokenizer.character_coverage=1",
        "train.divergence_factor=0",
        "train.divergence_factor=1",
        "train.warmup_steps=0",
        "train.bleu_sentences=0",
        "train.histogram_epochs=0",
        "decode.length_penalty_alpha=0",
        "decode.max_input_tokens=2",
        f"tokenizer.target_vocab_size={MINIMUM_VOCAB_SIZE}",
        "train.seed=0",
    ],
)
def test_the_edges_of_each_range_are_allowed(override):
    load_config("smoke", [override])


def test_every_numeric_setting_has_a_range():
    numeric = set()
    for section in dataclasses.fields(Config):
        if dataclasses.is_dataclass(section.default_factory):
            hints = typing.get_type_hints(section.default_factory)
            for name, hint in hints.items():
                if {int, float} & {hint, *typing.get_args(hint)}:
                    numeric.add(f"{section.name}.{name}")
    assert set(RANGES) == numeric


def test_the_vocab_minimum_is_the_tokenizers():
    from app.data.tokenizer import _MINIMUM_VOCAB_SIZE

    assert MINIMUM_VOCAB_SIZE == _MINIMUM_VOCAB_SIZE


def test_luong_dot_needs_an_encoder_half_as_wide_as_the_decoder():
    luong_dot = ["model.attention_style=luong", "model.luong_score=dot"]
    with pytest.raises(ValueError) as error:
        load_config("smoke", luong_dot)
    assert str(error.value) == (
        "model.luong_score=dot needs 2 * model.encoder_units == model.units (the annotations join both "
        "encoder directions), got model.units=32 and model.encoder_units=None (= units); use "
        "model.encoder_units=16 or model.luong_score=general"
    )
    assert load_config("smoke", [*luong_dot, "model.encoder_units=16"]).model.encoder_units == 16
    assert load_config("smoke", ["model.luong_score=dot"]).model.luong_score == "dot"  # bahdanau ignores it


@pytest.mark.parametrize("batches", ["", "10,20", "5,5"])
def test_profile_batches_take_a_start_and_stop(batches):
    assert load_config("smoke", [f"train.profile_batches={batches}"]).train.profile_batches == batches


@pytest.mark.parametrize("batches", ["20,10", "10", "0,5", "1,2,3", "a,b", "-1,5"])
def test_profile_batches_out_of_order_or_malformed_are_refused(batches):
    with pytest.raises(ValueError) as error:
        load_config("smoke", [f"train.profile_batches={batches}"])
    assert str(error.value) == (
        "train.profile_batches: expected empty or START,STOP with 1 <= START <= STOP (e.g. 10,20), "
        f"got {batches!r}"
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epocs=3", "Unknown key"),
        ("training.epochs=3", "Unknown config section"),
        ("model.cell=rnn", "model.cell='rnn' is not one of"),
        ("train.distribution=horovod", "train.distribution='horovod' is not one of"),
        ("train.precision=float16", "train.precision='float16' is not one of"),
        ("epochs=3", "section.key=value"),
        ("data.corpus=tsv", "needs data.tsv_path"),
        ("name.x=3", "'name' is not a config section"),
    ],
)
def test_bad_settings_are_explained(override, message):
    with pytest.raises(ValueError, match=message):
        load_config("smoke", [override])


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(ValueError, match="available presets: .*smoke"):
        load_config("nonexistent")


def test_preset_files_read_numbers_as_users_write_them(tmp_path):
    preset = tmp_path / "mine.yaml"
    preset.write_text(
        "train:\n  learning_rate: 1e-4\n  clipnorm: '2.5'\n  epochs: 2\ndata:\n  source_language: no\n"
    )
    config = load_config(str(preset))
    assert (config.train.learning_rate, config.train.clipnorm, config.train.epochs) == (1e-4, 2.5, 2)
    assert config.data.source_language == "no" and config.name == "mine"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "train:\n  epochs: 3\n   batch_size: 2\n",
            "{path}:3:14: invalid YAML: mapping values are not allowed here",
        ),
        ("train: [1,\n", "{path}:2:1: invalid YAML: expected the node content, but found '<stream end>'"),
        (
            "- train\n- model\n",
            "{path}: expected a mapping of config sections " + SECTIONS + ", got a list",
        ),
        (
            "smoke\n",
            "{path}: expected a mapping of config sections " + SECTIONS + ", got a string",
        ),
        (
            "train: 5\n",
            "{path}: section 'train' must be a mapping of settings (indented `key: value` lines), got 5",
        ),
        ("train:\n  epochs: 1.5\n", "train.epochs: expected an integer, got 1.5"),
    ],
)
def test_bad_preset_files_are_explained(tmp_path, text, message):
    preset = tmp_path / "bad.yaml"
    preset.write_text(text)
    with pytest.raises(ValueError) as error:
        load_config(str(preset))
    assert str(error.value) == message.format(path=preset)


def test_a_preset_that_is_not_utf8_is_named(tmp_path):
    preset = tmp_path / "latin1.yaml"
    preset.write_bytes("data:\n  source_language: espa\xf1ol\n".encode("latin-1"))
    with pytest.raises(ValueError, match=f"^{preset}: not UTF-8 text"):
        load_config(str(preset))


def test_empty_preset_and_empty_sections_take_overrides(tmp_path):
    preset = tmp_path / "empty.yaml"
    for text in ("", "train:\n"):
        preset.write_text(text)
        assert load_config(str(preset), ["train.epochs=2"]) == from_dict(
            {"name": "empty", "train": {"epochs": 2}}
        )


def test_from_dict_refuses_what_is_not_a_mapping():
    with pytest.raises(ValueError, match=r"^expected a mapping of config sections .*, got a list$"):
        from_dict(["train"])
    with pytest.raises(ValueError, match=r"^train: expected a mapping of settings .*, got 5$"):
        from_dict({"train": 5})


@pytest.mark.parametrize(
    "overrides",
    [
        ["train.epochs=3"],
        ["train.learning_rate=1e-10", "train.clipnorm=1e6", "model.dropout=0"],
        ["data.tsv_path=1e6", "data.source_language=no", "data.target_language=true", "data.corpus=tsv"],
        ["data.source_bible=2024-01-01", "train.profile_batches=10,20", "model.encoder_units=16"],
    ],
)
def test_saved_config_reloads_identically(tmp_path, overrides):
    config = load_config("smoke", overrides)
    save_config(config, tmp_path / "config.yaml")
    assert load_config(str(tmp_path / "config.yaml")) == config
