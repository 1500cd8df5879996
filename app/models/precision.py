"""Mixed precision: which policy trains, and the casts Keras's autocasting does not do.

Steps called directly (decoding) read float32 variables and must cast them to the compute
dtype of their inputs themselves (`weight_as`).
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
# Tensor cores compute float16 from Volta (compute capability 7.0) on; older GPUs gain nothing from it.
FLOAT16_MIN_COMPUTE_CAPABILITY = (7, 0)


def weight_as(variable, dtype) -> tf.Tensor:
    return tf.cast(variable, dtype)


def cpu_bfloat16_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The CPU's bfloat16 instruction sets of `BFLOAT16_CPU_FLAGS` (empty where it has none)."""
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:
        return []
    return [flag for flag in BFLOAT16_CPU_FLAGS if flag in flags]


def cpu_computes_bfloat16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU has bfloat16 instructions (AVX512-BF16 or AMX): a 2048² bfloat16 matmul
    runs at twice the float32 rate on the reference machine."""
    return bool(cpu_bfloat16_flags(cpuinfo))


def gpu_compute_capabilities() -> list[tuple[int, int]]:
    """(major, minor) of each visible GPU (TensorFlow's device details; empty without GPUs)."""
    capabilities = []
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability:
            capabilities.append(tuple(capability))
    return capabilities


def training_policy(precision: str) -> str:
    """The Keras dtype policy for `train.precision`; `auto` follows the hardware:
    - GPUs, all of compute capability 7.0 or more: mixed_float16 (Keras scales the loss);
    - other GPUs: float32;
    - no GPU, a CPU with bfloat16 instructions: mixed_bfloat16 (the bench measured it faster at
      equal dev loss there);
    - else float32.
    `float32`, `mixed_bfloat16` and `mixed_float16` are taken as they are."""
    if precision != "auto":
        return precision
    if tf.config.list_physical_devices("GPU"):
        capabilities = gpu_compute_capabilities()
        fast = capabilities and min(capabilities) >= FLOAT16_MIN_COMPUTE_CAPABILITY
        return "mixed_float16" if fast else "float32"
    return "mixed_bfloat16" if cpu_computes_bfloat16() else "float32"


def describe_policy(precision: str) -> str:
    """The log line of what `train.precision` resolved to, and why where it was `auto`."""
    policy = training_policy(precision)
    if precision != "auto":
        return f"Precision: {policy} (train.precision)"
    if tf.config.list_physical_devices("GPU"):
        capabilities = ", ".join(f"{major}.{minor}" for major, minor in gpu_compute_capabilities())
        reason = f"GPU compute capability {capabilities or 'unknown'}"
    else:
        flags = cpu_bfloat16_flags()  # training_policy chose mixed_bfloat16 exactly when this is non-empty
        reason = (
            f"no GPU; this CPU has {' and '.join(flags)}"
            if flags
            else "no GPU and no bfloat16 instructions in this CPU"
        )
    return f"Precision: {policy} (train.precision=auto: {reason})"
