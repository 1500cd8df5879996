"""PNG figures: attention heatmaps (TensorBoard images, `attend translate --plot`) and BLEU by length."""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

SUBWORD_MARK = "\u2581"  # SentencePiece's word-start mark, shown as a space-like underscore

# Heatmap geometry, in pixels at DPI: each piece gets PIECE_PX until a side would pass MAX_SIDE_PX, then the
# cells shrink to fit and only every k-th piece is labelled, so labels never go below MIN_FONT_PT.
DPI = 100
PIECE_PX = 22
MIN_CELLS_PX = 150  # a one-piece sentence still gets a heatmap wide enough for its title
MAX_SIDE_PX = 1400
FONT_PT = 9.0
MIN_FONT_PT = 7.0
TITLE_PT = 9.0
TITLE_CHARS = 80
LABEL_CHARS = 12  # a longer piece is cut with "…" in tick labels
SCALES = {"row": "share of the row's maximum", "absolute": "attention weight"}
SCALE_TITLES = {
    "row": "attention (each row scaled to its maximum)",
    "absolute": "attention (weights, 0 to 1)",
}
_PT_PX = DPI / 72  # pixels per point
_CHAR_EM = 0.62  # average width of a DejaVu Sans character, in ems
_LINE_EM = 1.45  # height of a label line including spacing, in ems


def readable(pieces: list[str]) -> list[str]:
    return [piece.replace(SUBWORD_MARK, "_") for piece in pieces]


def shortened(text: str, limit: int) -> str:
    """`text` on one line, cut to `limit` characters with a trailing "…"."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\u2026"


def scaled_weights(weights: np.ndarray, scale: str = "row") -> np.ndarray:
    """What the heatmap colours: `scale="row"` divides each target row by its maximum (its most-attended
    source piece is 1, all-zero rows stay 0); `"absolute"` keeps the weights. NaN shows as 0."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {sorted(SCALES)}, not {scale!r}")
    values = np.nan_to_num(np.asarray(weights, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if scale == "absolute" or values.size == 0:
        return values
    row_max = values.max(axis=-1, keepdims=True)
    return np.divide(values, row_max, out=np.zeros_like(values), where=row_max > 0)


def _axis_layout(count: int, cells_px_limit: float) -> tuple[float, float, int]:
    """Cells' total length in px, tick label font size and label stride for `count` pieces on one axis."""
    cells_px = min(max(count * PIECE_PX, MIN_CELLS_PX), max(cells_px_limit, MIN_CELLS_PX))
    piece_px = cells_px / max(count, 1)
    font = min(FONT_PT, max(MIN_FONT_PT, piece_px / (_LINE_EM * _PT_PX)))
    stride = max(1, math.ceil(_LINE_EM * font * _PT_PX / piece_px))
    return cells_px, font, stride


def _label_px(labels: list[str], font: float) -> float:
    """Length of the longest tick label, in px."""
    return max((len(label) for label in labels), default=1) * _CHAR_EM * font * _PT_PX


def _every(stride: int) -> str:
    return "" if stride == 1 else f" (every {stride}{'nd' if stride == 2 else 'rd' if stride == 3 else 'th'})"


def attention_heatmap(
    source_pieces: list[str],
    target_pieces: list[str],
    weights: np.ndarray,
    title: str = "",
    *,
    scale: str = "row",
    max_side_px: int = MAX_SIDE_PX,
) -> bytes:
    """PNG of `weights [target, source]` with labelled axes: source subwords across, target down.

    The image grows with the sentence (about PIECE_PX a piece) and stays within `max_side_px` a side;
    `scale="row"` (the default) colours each target row relative to its own maximum, so even a young
    model's near-uniform attention shows where it looks most; `scale="absolute"` colours the raw 0–1 weights.
    """
    colours = scaled_weights(weights, scale)
    source = [shortened(piece, LABEL_CHARS) for piece in readable(list(source_pieces))]
    target = [shortened(piece, LABEL_CHARS) for piece in readable(list(target_pieces))]
    if colours.ndim != 2 or colours.size == 0:
        colours = np.zeros((max(len(target), 1), max(len(source), 1)))
    rows, columns = colours.shape

    # Margins around the cells, in px: labels, axis titles, colour bar and the plot title.
    axis_title_px = 2.2 * FONT_PT * _PT_PX
    colourbar_px = 95
    slack_px = 24  # `bbox_inches="tight"` padding, and a margin for the estimates
    x_font_guess = _axis_layout(columns, max_side_px)[1]
    y_font_guess = _axis_layout(rows, max_side_px)[1]
    left_px = _label_px(target, y_font_guess) + axis_title_px + 10
    bottom_px = _label_px(source, x_font_guess) + axis_title_px + 10
    width_cells, x_font, x_stride = _axis_layout(columns, max_side_px - left_px - colourbar_px - slack_px)
    figure_width_px = left_px + width_cells + colourbar_px
    heading = SCALE_TITLES[scale]
    lines = textwrap.wrap(
        shortened(title, TITLE_CHARS), max(24, int(figure_width_px / (0.55 * TITLE_PT * _PT_PX)))
    )
    top_px = (len(lines) + 1) * _LINE_EM * TITLE_PT * _PT_PX + 12
    height_cells, y_font, y_stride = _axis_layout(rows, max_side_px - top_px - bottom_px - slack_px)
    figure_height_px = top_px + height_cells + bottom_px

    figure = plt.figure(figsize=(figure_width_px / DPI, figure_height_px / DPI), dpi=DPI)
    axes = figure.add_axes(
        (
            left_px / figure_width_px,
            bottom_px / figure_height_px,
            width_cells / figure_width_px,
            height_cells / figure_height_px,
        )
    )
    image = axes.imshow(colours, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    x_ticks = range(0, columns, x_stride)
    y_ticks = range(0, rows, y_stride)
    axes.set_xticks(list(x_ticks), [source[i] if i < len(source) else "" for i in x_ticks], rotation=90)
    axes.set_yticks(list(y_ticks), [target[i] if i < len(target) else "" for i in y_ticks])
    axes.tick_params(axis="x", labelsize=x_font, length=2, pad=2)
    axes.tick_params(axis="y", labelsize=y_font, length=2, pad=2)
    axes.set_xlabel(f"source pieces{_every(x_stride)}", fontsize=FONT_PT)
    axes.set_ylabel(f"output pieces{_every(y_stride)}", fontsize=FONT_PT)
    figure.suptitle("\n".join([*lines, heading]), fontsize=TITLE_PT, y=1 - 6 / figure_height_px, va="top")
    colourbar_axes = figure.add_axes(
        (
            (left_px + width_cells + 8) / figure_width_px,
            bottom_px / figure_height_px,
            12 / figure_width_px,
            height_cells / figure_height_px,
        )
    )
    bar = figure.colorbar(image, cax=colourbar_axes)
    bar.ax.tick_params(labelsize=FONT_PT - 1)
    bar.set_label(SCALES[scale], fontsize=FONT_PT - 1)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.08)
    plt.close(figure)
    return buffer.getvalue()


def translation_heatmap(
    source_tokens: np.ndarray,
    target_tokens: np.ndarray,
    attention: np.ndarray,
    title: str = "",
    *,
    scale: str = "row",
) -> bytes:
    """Heatmap of one row of `translate_with_attention`'s output (byte-string tokens, "" at padding)."""
    source = [piece.decode() for piece in source_tokens if piece]
    target = [piece.decode() for piece in target_tokens if piece]
    return attention_heatmap(source, target, attention[: len(target), : len(source)], title, scale=scale)


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


def frontier_plot(points: list[dict], path: Path, title: str = "Quality against decoding speed") -> None:
    """BLEU (with its 95 % margin) against sentences/s at batch 64, one marker per model and one
    point per export (`points` rows: `model`, `export`, `bleu`, `bleu_ci95`, `sentences_per_s_batch64`)."""
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=100)
    for model in dict.fromkeys(point["model"] for point in points):
        rows = [point for point in points if point["model"] == model]
        axes.errorbar(
            [row["sentences_per_s_batch64"] for row in rows],
            [row["bleu"] for row in rows],
            yerr=[row["bleu_ci95"] for row in rows],
            fmt="o",
            capsize=3,
            label=model,
        )
        for row in rows:
            axes.annotate(
                row["export"],
                (row["sentences_per_s_batch64"], row["bleu"]),
                textcoords="offset points",
                xytext=(5, 4),
                fontsize=8,
            )
    axes.set_xscale("log")
    axes.set_xlabel("sentences/s, batch 64 (log scale)")
    axes.set_ylabel("test BLEU")
    axes.set_title(title)
    axes.grid(alpha=0.3, which="both")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)
