"""A crowd through the real Telegram adapter: people holding conversations, paced like people.

    python benchmarks/crowd.py --model <SmolLM2 .gguf> --chats 50 --turns 5 --pace 11

Each person sends their first message within the first --pace seconds, then each next one
--pace seconds (give or take 30 %) after the previous answer arrived. Everything goes the
way a user's message goes: the fake Bot API on loopback (tests/support/fake_telegram.py),
python-telegram-bot, the inbox, the chat service and the engine, all with default settings
unless flags say otherwise. Reported: questions answered and refused, the most requests
waiting at once, and each question's wait for its whole answer (p50, p95, worst).
Never part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.speed_test import add_model_arguments, chosen_model, save_json  # noqa: E402

TOPICS = ["rice", "rain", "trains", "the sea", "bread", "music", "maps", "tea", "bikes", "snow"]


def outcomes(api: Any, chat: int) -> tuple[list[Any], list[Any]]:
    """(answers, refusals) sent to one private chat so far."""
    sent = api.sent("sendMessage", chat)
    return [c for c in sent if "⚡" in c["text"]], [c for c in sent if "⚡" not in c["text"]]


async def crowd(model: str, args: argparse.Namespace, state: Path) -> dict[str, Any]:
    """Run the crowd once; the figures."""
    from adapters.telegram_adapter import TelegramAdapter
    from bot.history import HistoryStore
    from bot.inbox import Inbox
    from bot.service import ChatService
    from bot.settings import BotSettings, TelegramSettings
    from engine.config import EngineSettings
    from engine.engine import Engine
    from engine.serving.stats import percentile
    from tests.support.fake_telegram import TOKEN, FakeBotAPI

    api = FakeBotAPI()
    await api.start()
    engine = Engine(EngineSettings(model=model, cache_dir=state / "responses"))
    await engine.start()
    history = HistoryStore(state / "history", 64 << 20)
    inbox = Inbox(state / "inbox", 600)
    settings = BotSettings(history_dir=state / "history")
    adapter = TelegramAdapter(
        ChatService(engine, settings, history),
        TelegramSettings(token=TOKEN, base_url=api.base_url),
        inbox,
    )
    stop = asyncio.Event()
    serving = asyncio.create_task(adapter.run(stop))
    await api.wait_for(lambda: api.sent("setMyCommands"), within=120)
    pacing = random.Random(15)
    waits: list[float] = []

    async def person(index: int) -> None:
        chat = 10_000 + index
        await asyncio.sleep(pacing.uniform(0, args.pace))
        for turn in range(args.turns):
            topic = TOPICS[(index + turn) % len(TOPICS)]
            asked = time.monotonic()
            api.message(
                f"Person {index}, turn {turn}: tell me about {topic}.", chat_id=chat, user_id=chat
            )
            await api.wait_for(lambda t=turn: sum(map(len, outcomes(api, chat))) > t, within=600)
            waits.append(time.monotonic() - asked)
            await asyncio.sleep(args.pace * pacing.uniform(0.7, 1.3))

    started = time.monotonic()
    await asyncio.gather(*(person(index) for index in range(args.chats)))
    elapsed = time.monotonic() - started
    snapshot = engine.snapshot()
    stop.set()
    await serving
    await engine.close()
    history.close()
    inbox.close()
    await api.stop()
    chats = [outcomes(api, 10_000 + index) for index in range(args.chats)]
    refusals = [c["text"] for _, refused in chats for c in refused]
    return {
        "chats": args.chats,
        "turns": args.turns,
        "pace_s": args.pace,
        "questions": args.chats * args.turns,
        "answered": sum(len(answers) for answers, _ in chats),
        "refused": len(refusals),
        "refusal_texts": sorted(set(refusals)),
        "queue_depth_max": snapshot.queue_depth_max,
        "batch_mean": snapshot.batch_mean,
        "wait_p50_s": statistics.median(waits),
        "wait_p95_s": percentile(waits, 95),
        "wait_max_s": max(waits),
        "elapsed_s": elapsed,
    }


def main() -> int:
    """Parse arguments, run the crowd, print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--chats", type=int, default=50)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--pace", type=float, default=11.0, help="seconds between messages")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "crowd.json")
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("PTB_TIMEDELTA", "1")
    model = chosen_model(parser, args)
    with tempfile.TemporaryDirectory() as state:
        result = asyncio.run(crowd(model, args, Path(state)))
    for key, value in result.items():
        print(f"{key:>16}: {value:.2f}" if isinstance(value, float) else f"{key:>16}: {value}")
    save_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
