"""A prompt chunk's attention: our C kernel against torch's bf16 SDPA, side by side.

    python benchmarks/prompt_attention.py

Qwen3-0.6B's attention shape (16 query heads, 8 KV heads, head dim 128) over a bf16 cache,
for a fresh prompt, a long chat's next turn and eight prompts' worth of tokens. The two run
in alternating rounds; medians per layer are reported, with the path the native decoder
takes on this CPU (engine/native/model.py, prompt_attention_in_c). Never part of the test run.
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

from benchmarks.speed_test import save_json  # noqa: E402

HEADS, KV_HEADS, HEAD_DIM = 16, 8, 128
SHAPES = {"fresh 159": (0, 159), "turn 6: 133 after 1,326": (1326, 133), "fresh 800": (0, 800)}


def contenders(history: int, count: int) -> dict[str, Callable[[], object]]:
    """Each way to attend one layer's chunk, as a call."""
    import torch
    from torch.nn import functional

    from engine.native import kernel_builder
    from engine.native.kernel_builder import pointer

    library = kernel_builder.kernels()
    end = history + count
    keys = torch.randn(KV_HEADS, end + 64, HEAD_DIM).bfloat16()
    values = torch.randn(KV_HEADS, end + 64, HEAD_DIM).bfloat16()
    queries = torch.randn(count, HEADS, HEAD_DIM) / 4
    out = torch.empty(count, HEADS * HEAD_DIM)
    visible = torch.arange(end)[None, :] <= torch.arange(count)[:, None] + history

    def ours(kernel: Callable[..., int]) -> Callable[[], object]:
        return lambda: kernel(
            pointer(queries), pointer(keys), pointer(values), HEADS, KV_HEADS, HEAD_DIM,
            keys.shape[1], history, count, pointer(out), torch.get_num_threads(),
        )  # fmt: skip

    def sdpa() -> object:
        return functional.scaled_dot_product_attention(
            queries.transpose(0, 1)[None].bfloat16(),
            keys[None, :, :end],
            values[None, :, :end],
            attn_mask=None if history == 0 else visible,
            is_causal=history == 0,
            scale=1.0,
            enable_gqa=True,
        )

    return {
        "C kernel": ours(library.qb_prompt_attention),
        "C per query": ours(library.qb_prompt_attention_per_query),
        "torch SDPA bf16": sdpa,
    }


def main() -> int:
    """Time both on each shape; print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=10, help="timed calls per round")
    parser.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "prompt_attention.json"
    )
    args = parser.parse_args()
    import torch
    from rich.console import Console
    from rich.table import Table

    from engine.loading.machine import physical_cores_available
    from engine.native.model import prompt_attention_in_c

    torch.set_num_threads(min(8, physical_cores_available()))
    chosen = "C kernel" if prompt_attention_in_c() else "torch SDPA bf16"
    rows = []
    with torch.inference_mode():
        for name, (history, count) in SHAPES.items():
            calls = contenders(history, count)
            times: dict[str, list[float]] = {label: [] for label in calls}
            for _ in range(args.rounds):
                for label, call in calls.items():
                    call()  # warm
                    start = time.perf_counter()
                    for _ in range(args.calls):
                        call()
                    times[label].append((time.perf_counter() - start) / args.calls)
            medians = {label: statistics.median(values) for label, values in times.items()}
            rows.append({"shape": name, "history": history, "count": count, "ms": {
                label: 1000 * value for label, value in medians.items()}})  # fmt: skip
    table = Table(title=f"prompt attention per layer, {torch.get_num_threads()} threads "
                  f"(the decoder uses: {chosen})")  # fmt: skip
    table.add_column("chunk")
    for label in rows[0]["ms"]:
        table.add_column(label)
    for row in rows:
        table.add_row(row["shape"], *(f"{ms:.2f} ms" for ms in row["ms"].values()))
    Console().print(table)
    save_json(args.json, {"chosen": chosen, "threads": torch.get_num_threads(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
