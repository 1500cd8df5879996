"""PNG figures: attention heatmaps (TensorBoard images, `attend translate --plot`) and BLEU by length."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

SUBWORD_MARK = "\u2581"  # SentencePiece's word-start mark, shown as a space-like underscore


def readable(pieces: list[str]) -> list[str]:
    return [piece.replace(SUBWORD_MARK, "_") for piece in pieces]


def attention_heatmap(
    source_pieces: list[str], target_pieces: list[str], weights: np.ndarray, title: str = ""
) -> bytes:
    """PNG of `weights [target, source]` with labelled axes: source subwords across, target down."""
    width = max(4.0, 0.35 * len(source_pieces) + 2)
    height = max(3.0, 0.3 * len(target_pieces) + 1.5)
    figure, axes = plt.subplots(figsize=(width, height), dpi=100)
    image = axes.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    axes.set_xticks(range(len(source_pieces)), readable(source_pieces), rotation=90, fontsize=8)
    axes.set_yticks(range(len(target_pieces)), readable(target_pieces), fontsize=8)
    axes.set_xlabel("source subwords")
    axes.set_ylabel("target subwords")
    if title:
        axes.set_title(title[:100], fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.03)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def translation_heatmap(
    source_tokens: np.ndarray, target_tokens: np.ndarray, attention: np.ndarray, title: str = ""
) -> bytes:
    """Heatmap of one row of `translate_with_attention`'s output (byte-string tokens, "" at padding)."""
    source = [piece.decode() for piece in source_tokens if piece]
    target = [piece.decode() for piece in target_tokens if piece]
    return attention_heatmap(source, target, attention[: len(target), : len(source)], title)


def bleu_by_length_plot(
    tables: dict[str, list[dict]], path: Path, title: str = "BLEU by source length"
) -> None:
    """One line per model: `tables[label]` rows have `bucket` (label), `bleu` and `sentences`."""
    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    for label, rows in tables.items():
        kept = [row for row in rows if row["sentences"]]
        axes.plot([row["bucket"] for row in kept], [row["bleu"] for row in kept], marker="o", label=label)
    axes.set_xlabel("source sentence length (words)")
    axes.set_ylabel("BLEU")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)
