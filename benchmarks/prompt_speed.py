"""A prompt pass's matmuls, side by side: torch's bf16 GEMM on the packed weights
de-quantised (as prompts were read before) against our integer prompt kernel with 16-bit and
8-bit activations, over Qwen3-0.6B's four linears per layer.

    python benchmarks/prompt_speed.py --rows 16 64 128 256 800 2000
    ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 python benchmarks/prompt_speed.py   # as without AMX

With ONEDNN_MAX_CPU_ISA below AMX, torch's GEMM and our kernels both leave AMX alone (see
engine/native/cpu_features.py): a Xeon then stands in for a CPU with AVX-512 VNNI and BF16
but no AMX (Zen 4 and 5, Ice Lake). The three ways run in turn on the same inputs, --runs
times each; medians per layer. Never part of the test run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPES = {"qkv": (4096, 1024), "out": (1024, 2048), "gate_up": (6144, 1024), "down": (1024, 3072)}


def main() -> int:
    """Time each way at each row count; print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[16, 64, 128, 256, 800, 2000])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch
    from rich.console import Console
    from rich.table import Table

    from engine.native import kernel_builder
    from engine.native.cpu_features import cpu_has_amx
    from engine.native.packed_linear import PackedLinear

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    layers = [PackedLinear(torch.randn(*shape) * 0.02, None, 8) for shape in SHAPES.values()]
    ways: dict[str, Callable[[PackedLinear, torch.Tensor], torch.Tensor]] = {
        "bf16 (de-quantise + torch GEMM)": lambda layer, x: layer.prompt(x, torch.bfloat16, 0),
        "int16 activations": lambda layer, x: layer.prompt(x, torch.bfloat16, 16),
        "int8 activations": lambda layer, x: layer.prompt(x, torch.bfloat16, 8),
    }
    path = ("plain C", "AVX-512 VNNI", "AMX int8 tiles")[kernel_builder.kernels().qb_prompt_path()]
    table = Table(
        title=f"Qwen3-0.6B's linears, one layer, {args.threads} threads; torch on "
        f"{'AMX' if cpu_has_amx() else 'no AMX'}, our kernel on {path}"
    )
    table.add_column("rows")
    for name in ways:
        table.add_column(name)
    table.add_column("int16 / bf16 time")
    for rows in args.rows:
        inputs = [torch.randn(rows, layer.in_features).bfloat16() for layer in layers]
        times: dict[str, list[float]] = {name: [] for name in ways}
        for way in ways.values():  # a warm-up of each
            way(layers[0], inputs[0])
        for _ in range(args.runs):
            for name, way in ways.items():  # in turn, so a noisy neighbour slows all alike
                started = time.perf_counter()
                for layer, x in zip(layers, inputs, strict=True):
                    way(layer, x)
                times[name].append(time.perf_counter() - started)
        medians = {name: statistics.median(values) for name, values in times.items()}
        cells = [f"{seconds * 1e3:.1f} ms" for seconds in medians.values()]
        ratio = medians["int16 activations"] / medians["bf16 (de-quantise + torch GEMM)"]
        table.add_row(str(rows), *cells, f"{ratio:.2f}x")
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
