"""`attend translate`: sentences (arguments or stdin) through an exported SavedModel, exactly as
another program would load it, optionally with attention heatmaps."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

from app.plots import translation_heatmap
from app.run import RunDir


def find_export(model: Path) -> Path:
    """A run folder's export, or an export folder itself."""
    run_export = RunDir(model).export_dir
    export_dir = run_export if run_export.is_dir() else model
    if not (export_dir / "saved_model.pb").is_file():
        raise ValueError(f"No SavedModel at {export_dir}; train and export a run first")
    return export_dir


def translate_sentences(
    model: Path, sentences: Iterable[str], batch_size: int = 64, plot: Path | None = None
) -> Iterable[str]:
    """Translations in input order; with `plot`, heatmaps OUT.png, OUT-2.png, … beside them."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the SentencePiece ops the SavedModel uses)

    signatures = tf.saved_model.load(str(find_export(model))).signatures
    translate = signatures["translate_with_attention" if plot else "serving_default"]
    sentences = list(sentences)
    for start in range(0, len(sentences), batch_size):
        batch = sentences[start : start + batch_size]
        out = translate(text=tf.constant(batch, tf.string))
        for row, translation in enumerate(out["translation"].numpy()):
            if plot:
                save_attention_plot(out, row, batch[row], numbered(plot, start + row))
            yield translation.decode("utf-8")


def numbered(path: Path, index: int) -> Path:
    return path if index == 0 else path.with_name(f"{path.stem}-{index + 1}{path.suffix}")


def save_attention_plot(out: dict, row: int, sentence: str, path: Path) -> None:
    tokens = (out[key][row].numpy() for key in ("source_tokens", "target_tokens", "attention"))
    path.write_bytes(translation_heatmap(*tokens, title=sentence))
    print(f"(attention heatmap: {path})", file=sys.stderr)
