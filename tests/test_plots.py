"""Attention heatmaps a person can read: sized to the sentence, bounded, each row scaled to its maximum."""

from __future__ import annotations

import io
import warnings

import matplotlib.image as mpimg
import numpy as np
import pytest

from app.plots import MAX_SIDE_PX, attention_heatmap, readable, scaled_weights, translation_heatmap


def pieces(count: int, prefix: str) -> list[str]:
    return [f"\u2581{prefix}{index}" for index in range(count)]


def near_uniform(rows: int, columns: int, seed: int = 0) -> np.ndarray:
    """A young model's attention: every weight close to 1/columns."""
    weights = 1.0 + 0.05 * np.random.default_rng(seed).random((rows, columns))
    return weights / weights.sum(axis=1, keepdims=True)


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels."""
    assert png.startswith(b"\x89PNG")
    image = mpimg.imread(io.BytesIO(png), format="png")
    return image.shape[1], image.shape[0]


def heatmap_size(source_count: int, target_count: int, **options) -> tuple[int, int]:
    weights = near_uniform(target_count, source_count)
    title = "En el principio creó Dios los cielos y la tierra."
    png = attention_heatmap(pieces(source_count, "s"), pieces(target_count, "t"), weights, title, **options)
    return png_size(png)


def test_short_sentence_gets_a_small_image():
    width, height = heatmap_size(5, 4)
    assert 200 <= width <= 600
    assert 200 <= height <= 600


def test_image_grows_with_the_sentence_and_stays_bounded():
    short, medium, long = heatmap_size(5, 4), heatmap_size(20, 20), heatmap_size(40, 40)
    assert short[0] < medium[0] < long[0]
    assert short[1] < medium[1] < long[1]
    huge = heatmap_size(256, 256)
    assert max(huge) <= MAX_SIDE_PX
    assert max(heatmap_size(256, 256, max_side_px=900)) <= 900


def test_long_titles_and_pieces_do_not_blow_up_the_image():
    png = attention_heatmap(["\u2581" + "x" * 60] * 5, ["y" * 60] * 4, near_uniform(4, 5), "word " * 100)
    width, height = png_size(png)
    assert width <= 600
    assert height <= 600


def test_row_scaling_divides_each_row_by_its_maximum():
    weights = np.array([[0.04, 0.05, 0.06], [0.2, 0.5, 0.3], [0.0, 0.0, 0.0]])
    scaled = scaled_weights(weights)  # "row" is the default
    np.testing.assert_allclose(scaled[0], [4 / 6, 5 / 6, 1.0])
    np.testing.assert_allclose(scaled[1], [0.4, 1.0, 0.6])
    np.testing.assert_array_equal(scaled[2], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(scaled.max(axis=1), [1.0, 1.0, 0.0])


def test_near_uniform_rows_get_the_brightest_colour():
    scaled = scaled_weights(near_uniform(6, 20))
    np.testing.assert_allclose(scaled.max(axis=1), np.ones(6))


def test_absolute_scale_keeps_the_weights():
    weights = near_uniform(3, 4)
    np.testing.assert_array_equal(scaled_weights(weights, "absolute"), weights)
    with pytest.raises(ValueError, match="scale"):
        scaled_weights(weights, "log")


def test_all_zero_and_nan_weights_draw_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scaled = scaled_weights(np.array([[0.0, 0.0], [np.nan, 1.0]]))
        np.testing.assert_array_equal(scaled, [[0.0, 0.0], [0.0, 1.0]])
        for scale in ("row", "absolute"):
            png_size(attention_heatmap(pieces(3, "s"), pieces(4, "t"), np.zeros((4, 3)), "none", scale=scale))
        png_size(attention_heatmap(pieces(3, "s"), [], np.zeros((0, 3)), "empty translation"))


def test_translation_heatmap_drops_padding():
    source = np.array(["\u2581el".encode(), "\u2581perro".encode(), b"</s>", b""])
    target = np.array(["\u2581the".encode(), "\u2581dog".encode(), b"</s>", b"", b""])
    attention = np.full((5, 4), 0.05)
    width, height = png_size(translation_heatmap(source, target, attention, title="el perro"))
    assert 200 <= width <= 600
    assert 200 <= height <= 600


def test_readable_shows_the_word_mark_as_underscore():
    assert readable(["\u2581el", "s", "</s>"]) == ["_el", "s", "</s>"]
