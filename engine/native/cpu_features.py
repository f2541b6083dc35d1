"""What this CPU can do, read from /proc/cpuinfo: which kernels build and which dtype is fast."""

from __future__ import annotations

import os
import platform
from pathlib import Path

AMX_FLAGS = frozenset({"amx_bf16", "amx_tile", "amx_int8", "amx_fp16"})


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none), less AMX's
    where ONEDNN_MAX_CPU_ISA keeps oneDNN (torch's GEMMs) off AMX: one knob then holds our
    kernels and torch's to the same instructions (how this machine stands in for a CPU
    without AMX in benchmarks/prompt_speed.py)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if limit and limit != "ALL" and "AMX" not in limit:
        flags -= AMX_FLAGS
    return frozenset(flags)


def cpu_has_amx() -> bool:
    """True when the CPU has AMX tiles for int8 and bf16 (Intel Xeon, 4th generation on)."""
    return {"amx_tile", "amx_int8", "amx_bf16"} <= cpu_flags()


def cpu_has_vnni() -> bool:
    """True when x86 integer dot products (VNNI) sum without 16-bit saturation."""
    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX on x86, BF16 on Arm)."""
    flags = cpu_flags()
    if platform.machine().lower() in {"aarch64", "arm64"}:
        return "bf16" in flags
    return bool(flags & {"avx512_bf16", "amx_bf16"})
