"""Mixed precision: which policy trains, and the casts Keras's autocasting does not do.

Steps called directly (decoding) read float32 variables and must cast them to the compute
dtype of their inputs themselves (`weight_as`).
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def weight_as(variable, dtype) -> tf.Tensor:
    return tf.cast(variable, dtype)


def cpu_computes_bfloat16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU has bfloat16 instructions (AVX512-BF16 or AMX): a 2048² bfloat16 matmul
    runs at twice the float32 rate on the reference machine."""
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:
        return False
    return any(flag in flags for flag in BFLOAT16_CPU_FLAGS)


def training_policy(precision: str) -> str:
    """The Keras dtype policy for `train.precision`. `auto` is mixed_bfloat16 on a CPU with bfloat16
    instructions and no visible GPU (the bench measured it faster at equal dev loss there) and
    float32 everywhere else; `float32` and `mixed_bfloat16` are taken as they are."""
    if precision != "auto":
        return precision
    if tf.config.list_physical_devices("GPU") or not cpu_computes_bfloat16():
        return "float32"
    return "mixed_bfloat16"
