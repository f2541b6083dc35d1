"""Thread settings for torch, decided once before the model loads."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import psutil
import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ThreadPlan:
    """The thread counts in effect and why they were chosen."""

    intra_op: int
    inter_op: int
    reason: str


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
    effective = ThreadPlan(torch.get_num_threads(), torch.get_num_interop_threads(), plan.reason)
    log.info(
        "torch threads: intra-op %d, inter-op %d (%s)",
        effective.intra_op,
        effective.inter_op,
        effective.reason,
    )
    return effective
