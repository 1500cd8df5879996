"""What this host allows, measured in the process that asks: the float32 matmul peak and the rate a
batch-1 product streams weights (the bounds of the bench's targets), peak RSS, the machine, and the
CPU (model name and the instruction sets that change what is fast: the tutorial's ratios hold for it)."""

from __future__ import annotations

import os
import platform
import resource
import time
from pathlib import Path

import tensorflow as tf

from app.bench.report import Cpu, Machine

# the /proc/cpuinfo flags that decide speed here: AVX2/FMA (every float32 kernel), AVX-512 (wider
# float32), and bfloat16 arithmetic (AVX512-BF16, AMX), which `train.precision: auto` reads
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def matmul_peak_gflops(size: int = 2048, repeats: int = 10) -> float:
    """Float32 matmul GFLOP/s of this process on this machine (the best of several timed runs)."""
    left = tf.random.stateless_normal([size, size], seed=(1, 2))
    right = tf.random.stateless_normal([size, size], seed=(3, 4))
    multiply = tf.function(lambda x, y: tf.matmul(x, y))
    multiply(left, right).numpy()  # trace and warm up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        multiply(left, right).numpy()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def matvec_gbytes_per_s(rows: int = 256, columns: int = 8192, repeats: int = 200) -> float:
    """GB/s at which this process streams a float32 weight matrix through a batch-1 product (a
    `[1, rows] · [rows, columns]` matmul, 8 MB by default, the size of an 8,000-piece vocabulary
    projection), chained in one graph as a decoder's steps are; the best of several timed runs."""
    vector = tf.random.stateless_normal([1, rows], seed=(1, 2))
    weights = tf.random.stateless_normal([rows, columns], seed=(3, 4))

    @tf.function
    def chain(vector, weights):
        for _ in tf.range(repeats):  # each product reads the whole matrix; its output feeds the next
            vector = tf.tanh(tf.matmul(vector, weights)[:, :rows])
        return vector

    chain(vector, weights).numpy()  # trace and warm up
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        chain(vector, weights).numpy()
        best = min(best, time.perf_counter() - started)
    return 4 * rows * columns * repeats / best / 1e9


def peak_rss_mb() -> float:
    """This process's peak resident set so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def cpu_description(matmul_peak: float, cpuinfo: Path = Path("/proc/cpuinfo")) -> Cpu:
    """The CPU's model name and which of `CPU_FLAGS` it has (from `cpuinfo`; the platform's
    processor name and no flags where it cannot be read), with the matmul peak measured by the caller."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        text = ""
    fields = {
        key.strip(): value.strip() for key, _, value in (line.partition(":") for line in text.splitlines())
    }
    flags = set(fields.get("flags", "").split())
    model = fields.get("model name") or platform.processor() or platform.machine()
    return Cpu(model, [flag for flag in CPU_FLAGS if flag in flags], round(matmul_peak, 1))


def machine_description() -> Machine:
    return Machine(
        cpus=os.cpu_count(),
        processor=platform.processor() or platform.machine(),
        python=platform.python_version(),
        tensorflow=tf.__version__,
    )
