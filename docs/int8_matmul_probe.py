"""Times TensorFlow's int8 matmul against float32 on the decoder's own products (#13's int8 direction).

Why a script: int8 weights would quarter the 7 MB a batch-1 decoder step reads, but only if the
runtime multiplies int8 faster than float32. Keras 3's `quantize("int8")` on the TensorFlow backend
quantises a Dense layer's inputs per row and calls `tf.matmul(int8, int8, output_type=int32)`; a
weight-only scheme would cast the int8 kernel back to float32 in the graph. This times both, and
the int8 product alone, against a plain float32 product, for the shapes of a decoder step (the
256 × V output projection, the 1,024 × 768 and 256 × 768 GRU/attention products) at batch 1 and
64, medians of many calls of one `tf.function` each, interleaved so that a busy machine slows all
four alike.

    python docs/int8_matmul_probe.py [--calls 300] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import tensorflow as tf

SHAPES = ((256, 5000), (256, 8000), (1024, 768), (256, 768))  # (inputs, outputs) of one product
ROWS = (1, 64)


def quantize_rows(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Symmetric int8 per row, as Keras's inputs quantizer does."""
    scale = tf.maximum(tf.reduce_max(tf.abs(x), axis=-1, keepdims=True), 1e-9) / 127.0
    return tf.cast(tf.round(x / scale), tf.int8), scale


def products(kernel: tf.Tensor) -> dict[str, Callable[[tf.Tensor], tf.Tensor]]:
    """The four ways of computing x @ kernel, each a `tf.function` of its own."""
    column_scale = tf.maximum(tf.reduce_max(tf.abs(kernel), axis=0), 1e-9) / 127.0
    kernel_int8 = tf.cast(tf.round(kernel / column_scale), tf.int8)

    @tf.function
    def float32(x):
        return tf.matmul(x, kernel)

    @tf.function
    def int8_dynamic(x):  # Keras 3's quantize("int8") Dense
        x_int8, row_scale = quantize_rows(x)
        product = tf.matmul(x_int8, kernel_int8, output_type=tf.int32)
        return tf.cast(product, tf.float32) * row_scale * column_scale

    @tf.function
    def int8_weight_only(x):
        return tf.matmul(x, tf.cast(kernel_int8, tf.float32)) * column_scale

    @tf.function
    def int8_both(x_int8):  # the int8 product alone, inputs already quantised
        return tf.matmul(x_int8, kernel_int8, output_type=tf.int32)

    return {
        "float32": float32,
        "int8 (Keras)": int8_dynamic,
        "int8 weights": int8_weight_only,
        "int8 matmul": int8_both,
    }


def median_ms(function, argument, calls: int) -> float:
    function(argument).numpy()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        function(argument).numpy()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    tf.random.set_seed(0)
    names = products(tf.ones([1, 1]))
    header = " | ".join(f"{name:>13}" for name in names)
    print(f"rows  inputs × outputs | {header}   (ms, median of rounds)")
    for rows in ROWS:
        for inputs, outputs in SHAPES:
            functions = products(tf.random.normal([inputs, outputs], stddev=inputs**-0.5))
            x = tf.random.normal([rows, inputs])
            arguments = dict.fromkeys(functions, x) | {"int8 matmul": quantize_rows(x)[0]}
            rounds = {name: [] for name in functions}
            for _ in range(args.rounds):
                for name, function in functions.items():
                    rounds[name].append(median_ms(function, arguments[name], args.calls))
            cells = " | ".join(f"{statistics.median(rounds[name]):13.3f}" for name in functions)
            print(f"{rows:4d}  {inputs:6d} × {outputs:<7d} | {cells}", flush=True)


if __name__ == "__main__":
    main()
