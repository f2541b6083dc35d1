"""What this machine gives the model: torch's threads, the device and the dtype, decided once."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import psutil
import torch

from engine.config import Device, Dtype
from engine.native.cpu_features import cpu_has_native_bf16

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ThreadPlan:
    """The thread counts in effect and why they were chosen."""

    intra_op: int
    inter_op: int
    reason: str

    def describe(self) -> str:
        """For the log: "intra-op 2, inter-op 1 (2 physical cores available)"."""
        return f"intra-op {self.intra_op}, inter-op {self.inter_op} ({self.reason})"


def usable_cpus() -> int:
    """Logical CPUs this process may run on (respects taskset / cgroup cpusets)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def physical_cores_available() -> int:
    """Physical cores the process can use: SMT siblings share one core's FPU, so count cores."""
    logical_total = psutil.cpu_count(logical=True) or 1
    physical_total = psutil.cpu_count(logical=False) or logical_total
    threads_per_core = max(1, logical_total // physical_total)
    return max(1, usable_cpus() // threads_per_core)


def plan_threads(explicit: int | None, cap: int, interop: int) -> ThreadPlan:
    """Choose intra-op threads: the explicit setting, else physical cores available, capped."""
    if explicit is not None:
        return ThreadPlan(explicit, interop, "set explicitly")
    cores = physical_cores_available()
    if cores > cap:
        # Decoding is bound by memory bandwidth: past a handful of cores more threads add
        # synchronisation cost, not speed. The cap is a setting so operators can measure.
        return ThreadPlan(cap, interop, f"{cores} physical cores available, capped at {cap}")
    return ThreadPlan(cores, interop, f"{cores} physical cores available")


def apply_threads(plan: ThreadPlan) -> ThreadPlan:
    """Apply the plan to torch; inter-op can only be set before any parallel work has run."""
    torch.set_num_threads(plan.intra_op)
    try:
        torch.set_num_interop_threads(plan.inter_op)
    except RuntimeError:
        # torch refuses once inter-op work has started (e.g. a second engine in one process).
        log.debug("inter-op threads already fixed at %d", torch.get_num_interop_threads())
    return ThreadPlan(torch.get_num_threads(), torch.get_num_interop_threads(), plan.reason)


def resolve_device(setting: Device) -> torch.device:
    """auto = CUDA when present, else CPU (the CPU path is the product)."""
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def resolve_dtype(setting: Dtype, device: torch.device) -> torch.dtype:
    """auto = bfloat16 where the hardware has it natively (2x faster decode here), else fp32."""
    if setting != "auto":
        return _DTYPES[setting]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
