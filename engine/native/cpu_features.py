"""What this CPU can do, read from /proc/cpuinfo: which kernels build and which dtype is fast."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    return frozenset(flags)


def cpu_has_vnni() -> bool:
    """True when x86 integer dot products (VNNI) sum without 16-bit saturation."""
    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX on x86, BF16 on Arm)."""
    flags = cpu_flags()
    if platform.machine().lower() in {"aarch64", "arm64"}:
        return "bf16" in flags
    return bool(flags & {"avx512_bf16", "amx_bf16"})
