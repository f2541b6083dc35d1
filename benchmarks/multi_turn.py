"""A chat's TTFT turn by turn as its history grows, with and without kept conversation state.

    python benchmarks/multi_turn.py --arch qwen3-0.6b --random-weights

A conversation of --turns turns (the bot's system prompt, ~110-token user messages,
128-token answers, history sent back each turn and trimmed to --history-budget exactly as
the chat service does), run --runs times with kept state (the default) and as many times
with ENGINE__PREFIX_CACHE_MB=0 (unless --no-baseline). Reported per turn: prompt tokens,
tokens reused, whether the history was trimmed, median TTFT (submission to first token)
both ways; and turn N's TTFT over turn 1's. Never part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.speed_test import add_model_arguments, chosen_model, save_json  # noqa: E402

TOPICS = ["gardens", "trains", "the sea", "old maps", "bread", "mountains", "music", "rain"]


def user_message(turn: int, tokens: int, count: Any) -> str:
    """A user message of about `tokens` tokens, different every turn."""
    from engine.events import ChatTurn

    words = f"Tell me more about {TOPICS[turn % len(TOPICS)]} and why people love them".split()
    text = ""
    while count((ChatTurn("user", text),)) < tokens:
        text += " " + words[len(text.split()) % len(words)]
    return text.strip()


async def conversations(model: str, args: argparse.Namespace, keep_mb: int) -> list[dict[str, Any]]:
    """args.runs conversations on one engine, each forgotten before the next (its turn 1
    starts cold); one row per turn with the median TTFT over the runs."""
    from engine.config import EngineSettings
    from engine.engine import Engine
    from engine.events import ChatTurn, GenerationRequest

    engine = Engine(
        EngineSettings(
            model=model,
            quantization=args.quantization,
            threads=args.threads,
            cache_enabled=False,
            prefix_cache_mb=keep_mb,
        )
    )
    await engine.start()
    await engine.generate(GenerationRequest((ChatTurn("user", "warm up"),), max_new_tokens=4))
    runs = []
    for run in range(args.runs):
        runs.append(await conversation(engine, args, f"chat{run}"))
        engine.forget(f"chat{run}")
    await engine.close()
    return [
        {**rows[0], "ttft_s": statistics.median(row["ttft_s"] for row in rows)}
        for rows in zip(*runs, strict=True)
    ]


async def conversation(engine: Any, args: argparse.Namespace, chat: str) -> list[dict[str, Any]]:
    """One conversation of args.turns turns; one row per turn."""
    from bot.history import trim_to_budget
    from bot.settings import DEFAULT_SYSTEM_PROMPT
    from engine.events import ChatTurn, GenerationRequest

    system = ChatTurn("system", DEFAULT_SYSTEM_PROMPT)
    history: list[ChatTurn] = []
    rows = []
    for turn in range(args.turns):
        user = ChatTurn("user", user_message(turn, args.user_tokens, engine.count_tokens))
        kept = trim_to_budget(system, history, user, engine.count_tokens, args.history_budget)
        trimmed, history = len(kept) < len(history), kept
        request = GenerationRequest(
            (system, *history, user),
            max_new_tokens=args.answer_tokens,
            ignore_stop=True,
            owner="user",
            conversation=chat,
        )
        finished = await engine.generate(request)
        stats = finished.stats
        rows.append(
            {
                "turn": turn + 1,
                "prompt_tokens": stats.prompt_tokens,
                "reused_tokens": stats.reused_tokens,
                "trimmed": trimmed,
                "ttft_s": stats.queue_wait_s + stats.ttft_s,
            }
        )
        history += [user, ChatTurn("assistant", finished.as_generated)]  # as the bot stores it
    return rows


def main() -> int:
    """Parse arguments, measure both ways, print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--quantization", default="auto")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--user-tokens", type=int, default=110)
    parser.add_argument("--answer-tokens", type=int, default=128)
    parser.add_argument("--keep-mb", type=int, default=1024, help="the kept-state budget")
    parser.add_argument(
        "--history-budget", type=int, help="BOT__HISTORY_TOKEN_BUDGET (default: the bot's)"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the runs without state")
    parser.add_argument("--runs", type=int, default=3, help="conversations; medians reported")
    parser.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "multi_turn.json"
    )
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    from rich.console import Console
    from rich.table import Table

    if args.history_budget is None:
        from bot.settings import BotSettings

        args.history_budget = BotSettings().history_token_budget
    model = chosen_model(parser, args)
    kept = asyncio.run(conversations(model, args, args.keep_mb))
    fresh = None if args.no_baseline else asyncio.run(conversations(model, args, 0))
    table = Table(
        title=f"{args.turns}-turn chat (history budget {args.history_budget}), TTFT per turn"
    )
    columns = ["turn", "prompt tokens", "reused", "trimmed", "TTFT kept", "kept / turn 1"]
    for column in columns + ([] if fresh is None else ["TTFT without"]):
        table.add_column(column)
    for index, with_state in enumerate(kept):
        row = [
            str(with_state["turn"]),
            str(with_state["prompt_tokens"]),
            str(with_state["reused_tokens"]),
            "yes" if with_state["trimmed"] else "",
            f"{with_state['ttft_s']:.2f} s",
            f"{with_state['ttft_s'] / kept[0]['ttft_s']:.2f}x",
        ]
        if fresh is not None:
            row.append(f"{fresh[index]['ttft_s']:.2f} s")
        table.add_row(*row)
    Console().print(table)
    save_json(args.json, {"history_budget": args.history_budget, "kept": kept, "without": fresh})
    return 0


if __name__ == "__main__":
    sys.exit(main())
