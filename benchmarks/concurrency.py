"""Many chats at once through the engine's async API: aggregate tok/s and TTFT per client count.

    python benchmarks/concurrency.py --arch qwen3-0.6b --random-weights --clients 1 2 4 8 16

For each N, N simulated chats (each its own user, a different ~100-token prompt) send at
the same moment and stream 128 tokens each. Reported per N: overall tok/s (all tokens over
the wall time, prompts included), aggregate decode tok/s (tokens after each chat's first,
per second in which any chat was decoding), TTFT p50/p95 and worst as each chat sees it
(submission to first token), and the mean decode batch while the round runs. One engine
serves every N.
Never part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.speed_test import (  # noqa: E402
    add_model_arguments,
    chosen_model,
    prompt_of,
    save_json,
)


async def one_round(engine: Any, prompts: list[str], new_tokens: int) -> dict[str, Any]:
    """N chats at once; returns the round's figures."""
    from engine.events import ChatTurn, GenerationRequest
    from engine.serving.stats import percentile

    async def chat(index: int, text: str) -> tuple[float, float, int, float]:
        request = GenerationRequest(
            (ChatTurn("user", text),),
            max_new_tokens=new_tokens,
            ignore_stop=True,
            owner=f"user{index}",
            conversation=f"chat{index}",
        )
        submitted = time.perf_counter()
        finished = await engine.generate(request)
        stats = finished.stats
        first = submitted + stats.queue_wait_s + stats.ttft_s
        return first, time.perf_counter(), stats.generated_tokens, stats.decode_tps

    batches: list[int] = []

    async def watch() -> None:  # the batch size as the round goes
        while True:
            batches.append(engine.snapshot().batch_size)
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    start = time.perf_counter()
    results = await asyncio.gather(*(chat(i, text) for i, text in enumerate(prompts)))
    end = time.perf_counter()
    watcher.cancel()
    ttfts = [first - start for first, _, _, _ in results]
    tokens = sum(generated for _, _, generated, _ in results)
    return {
        "clients": len(prompts),
        "overall_tps": tokens / (end - start),
        # tokens after each chat's first, per second during which any chat was decoding
        "decode_tps": sum(g - 1 for _, _, g, _ in results) / decoding_time(results),
        "batch_mean": statistics.fmean(b for b in batches if b) if any(batches) else 0.0,
        "ttft_p50_s": percentile(ttfts, 50),
        "ttft_p95_s": percentile(ttfts, 95),
        "ttft_max_s": max(ttfts),
        "wall_s": end - start,
    }


def decoding_time(results: list[tuple[float, float, int, float]]) -> float:
    """Seconds in which at least one chat was decoding (the union of first-token-to-done)."""
    total, reach = 0.0, float("-inf")
    for first, done, _, _ in sorted(results):
        if done > reach:
            total += done - max(first, reach)
            reach = done
    return total


async def measure(args: argparse.Namespace, model: str) -> dict[str, Any]:
    """One engine; for each client count, a warm-up round then args.runs measured rounds."""
    from engine.config import EngineSettings
    from engine.engine import Engine

    settings = EngineSettings(
        model=model,
        quantization=args.quantization,
        prompt_matmul=args.prompt_matmul,
        threads=args.threads,
        cache_enabled=False,
        prefix_cache_mb=0,  # every chat is new: nothing to reuse, nothing to skew
        max_batch=args.max_batch,
        queue_size=max(args.clients) * 2,
    )
    engine = Engine(settings)
    config = await engine.start()
    base = prompt_of(args.prompt_tokens - 4, engine.count_tokens)
    rounds = []
    for clients in args.clients:
        prompts = [f"Chat {n}: {base}" for n in range(clients)]
        await one_round(engine, prompts[:1], 8)  # warm-up
        runs = [await one_round(engine, prompts, args.new_tokens) for _ in range(args.runs)]
        median = {
            key: statistics.median(run[key] for run in runs) for key in runs[0] if key != "clients"
        }
        rounds.append({"clients": clients, **median})
        print(json.dumps(rounds[-1]), flush=True)
    await engine.close()
    return {
        "config": config.summary(),
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "max_batch": args.max_batch,
        "rounds": rounds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> int:
    """Parse arguments, measure, print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--quantization", default="auto")
    parser.add_argument(
        "--prompt-matmul", default="auto", choices=["auto", "int16", "int8", "bf16"]
    )
    parser.add_argument("--threads", type=int)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=100)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "concurrency.json"
    )
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    from rich.console import Console
    from rich.table import Table

    model = chosen_model(parser, args)
    result = asyncio.run(measure(args, model))
    table = Table(
        title=f"{result['config']} · {args.prompt_tokens}-token prompts, "
        f"{args.new_tokens} new tokens each, max batch {args.max_batch}"
    )
    for column in ("chats", "overall tok/s", "decode tok/s", "TTFT p50", "TTFT p95",
                   "TTFT worst", "mean batch"):  # fmt: skip
        table.add_column(column)
    for r in result["rounds"]:
        table.add_row(
            str(r["clients"]),
            f"{r['overall_tps']:.1f}",
            f"{r['decode_tps']:.1f}",
            f"{r['ttft_p50_s']:.2f} s",
            f"{r['ttft_p95_s']:.2f} s",
            f"{r['ttft_max_s']:.2f} s",
            f"{r['batch_mean']:.1f}",
        )
    Console().print(table)
    save_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
