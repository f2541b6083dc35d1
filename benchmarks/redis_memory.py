"""What the shared state costs in Redis: memory per conversation, per cached reply, per
inbox entry and per rate-limit bucket, written through the bot's own stores.

    python benchmarks/redis_memory.py --chats 1000

Starts a private redis-server (Debian's package) on a free port, fills it through
bot.state's stores with --chats conversations of --turns user/assistant pairs (Vietnamese
and English text of typical chat length), as many cached replies, done inbox entries and
rate-limit buckets, and reports Redis' used_memory growth per item (INFO memory, after
each kind) and MEMORY USAGE of one key of each kind. Writes JSON to benchmarks/results/.
Never part of the tests.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.settings import BotSettings, Settings, StateSettings  # noqa: E402
from bot.state.open_state import open_state  # noqa: E402
from engine import CachedReply, ChatTurn  # noqa: E402
from tests.support.http_server import free_port  # noqa: E402

QUESTION = "Bạn có thể giải thích ngắn gọn cách hoạt động của bộ nhớ đệm trong Redis không?"
ANSWER = (
    "Redis keeps every key in memory and answers from there; a TTL tells it when a key may "
    "go, and maxmemory with an eviction policy decides what goes first when memory is full. "
) * 3


def used(client: redis.Redis) -> int:
    """Redis' used_memory in bytes."""
    return int(client.info("memory")["used_memory"])


def main() -> None:
    """Fill a private Redis through the stores and print the cost of each kind of item."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=6, help="user/assistant pairs per chat")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="qwenbot-redis-memory-"))
    port = free_port()
    server = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port),
         "--bind", "127.0.0.1", "--dir", str(folder), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port, decode_responses=True)
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        url = f"redis://127.0.0.1:{port}/0"
        settings = Settings(bot=BotSettings(), state=StateSettings(redis_url=url))
        state = open_state(settings)
        assert state.reply_cache is not None
        inbox = state.journal()
        limiter = state.limiter(6, 3, "chat")
        turns = [ChatTurn("user", QUESTION), ChatTurn("assistant", ANSWER)] * args.turns
        results: dict[str, Any] = {"chats": args.chats, "turns_per_chat": 2 * args.turns}
        fills = {
            "conversation": lambda n: state.history.save(f"telegram:{n}:", turns),
            "cached_reply": lambda n: state.reply_cache.put(  # type: ignore[union-attr]
                f"{n:064x}", CachedReply(ANSWER, 180, 96, time.time())
            ),
            "inbox_entry_done": lambda n: (
                inbox.receive(f"telegram:1:{n}", f"telegram:{n}", {"text": QUESTION}),
                inbox.done(f"telegram:1:{n}"),
            ),
            "rate_limit_bucket": lambda n: limiter.acquire(f"telegram:{n}"),
        }
        samples = {
            "conversation": "qwenbot:history:telegram:0:",
            "cached_reply": f"qwenbot:reply:{0:064x}",
            "inbox_entry_done": "qwenbot:inbox:telegram:1:0",
            "rate_limit_bucket": "qwenbot:rate:chat:telegram:0",
        }
        for kind, fill in fills.items():
            before = used(client)
            for n in range(args.chats):
                fill(n)
            results[kind] = {
                "bytes_each": (used(client) - before) / args.chats,
                "memory_usage_of_one_key": client.memory_usage(samples[kind]),
            }
        text_bytes = len(json.dumps([{"role": t.role, "content": t.content} for t in turns],
                                    ensure_ascii=False).encode())  # fmt: skip
        results["conversation"]["json_bytes"] = text_bytes
        state.close()
    finally:
        client.close()
        server.kill()
        server.wait()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{'item':<20} {'bytes each':>12} {'MEMORY USAGE':>14}")
    for kind in ("conversation", "cached_reply", "inbox_entry_done", "rate_limit_bucket"):
        row = results[kind]
        print(f"{kind:<20} {row['bytes_each']:>12.0f} {row['memory_usage_of_one_key']:>14}")
    print(f"(a conversation of {2 * args.turns} turns is {text_bytes} bytes of JSON)")
    out = ROOT / "benchmarks" / "results" / "redis_memory.json"
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
