"""N chats streaming at once over HTTP: `qwenbot serve` against llama.cpp's `llama-server`.

    python benchmarks/http_load.py --gguf qwen3-0.6b-q8_0.gguf \\
        --llama-server ~/.cache/qwenbot-bench/llama.cpp/build-noamx/bin/llama-server

Both servers run on the same GGUF file with the same threads, llama-server with as many
parallel slots as the most clients asked for; both are started once and stay up. For each
N (1, 4, 8, 16 by default) the two are measured in turn, --rounds times: N clients (the
official `openai` client, one thread each) send different questions at once, streamed,
--tokens new tokens each. Reported per N: aggregate decode throughput (all the clients'
generated tokens over the round's wall time) and time to first token (p50 and p95 over
every client of every round), medians over rounds for the throughput. The reply cache is off
and every question differs, so no reply is served from a cache. Writes JSON to
benchmarks/results/. Never part of the tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.llama_agreement import llama_server  # noqa: E402
from benchmarks.speed_test import save_json  # noqa: E402
from tests.support.http_server import free_port, status  # noqa: E402

TOPICS = ("the sea", "a cat", "autumn", "a city at night", "bread", "a mountain", "rain",
          "a library", "trains", "the moon", "coffee", "a garden", "winter", "a river",
          "music", "a market")  # fmt: skip


@contextmanager
def qwenbot_server(model: Path, threads: int, batch: int) -> Iterator[str]:
    """`qwenbot serve` on the model; yields its base address."""
    port = free_port()
    state = Path(tempfile.mkdtemp(prefix="qwenbot-http-load-"))
    environment = os.environ | {
        "ENGINE__MODEL": str(model),
        "ENGINE__THREADS": str(threads),
        "ENGINE__MAX_BATCH": str(batch),
        "ENGINE__CACHE_ENABLED": "false",
        "SERVE__PORT": str(port),
        "SERVE__RATE_LIMIT_BURST": "100000",
        "BOT__HISTORY_DIR": str(state / "history"),
        "BOT__INBOX_DIR": str(state / "inbox"),
    }
    server = subprocess.Popen([sys.executable, "-m", "bot", "serve"], env=environment,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while status(port, "/readyz") != 200:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("qwenbot serve did not come up")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=60)


def one_client(address: str, index: int, round_: int, tokens: int) -> tuple[float, int]:
    """One streamed answer: (seconds to its first text, tokens generated)."""
    import openai

    question = f"Write a short poem about {TOPICS[index % len(TOPICS)]} (number {round_})."
    with openai.OpenAI(base_url=f"{address}/v1", api_key="unused", max_retries=0) as client:
        start, first, pieces, used = time.perf_counter(), None, 0, None
        stream = client.chat.completions.create(
            model="any", messages=[{"role": "user", "content": question}], max_tokens=tokens,
            temperature=0.0, stream=True, stream_options={"include_usage": True},
            user=f"client-{index}",  # each client its own end user, as in a chat app
        )  # fmt: skip
        for chunk in stream:
            if chunk.usage is not None:
                used = chunk.usage.completion_tokens
            if chunk.choices and chunk.choices[0].delta.content:
                first = first or time.perf_counter() - start
                pieces += 1
    return (first or float("nan")), (used if used is not None else pieces)


def one_round(addresses: list[str], clients: int, round_: int, tokens: int) -> dict[str, Any]:
    """N clients at once, spread over the servers in turn: aggregate tok/s, each one's TTFT."""
    start = time.perf_counter()

    def client(index: int) -> tuple[float, int]:
        return one_client(addresses[index % len(addresses)], index, round_, tokens)

    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client, range(clients)))
    wall = time.perf_counter() - start
    return {"tok_s": sum(t for _, t in results) / wall, "ttft": [f for f, _ in results]}


def summary(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """Median aggregate tok/s; TTFT p50 and p95 over every client."""
    ttfts = sorted(t for r in rounds for t in r["ttft"])
    p95 = ttfts[min(len(ttfts) - 1, round(0.95 * (len(ttfts) - 1)))]
    return {"tok_s": statistics.median(r["tok_s"] for r in rounds),
            "ttft_p50_s": statistics.median(ttfts), "ttft_p95_s": p95}  # fmt: skip


def main() -> None:
    """Both servers up, every N measured alternately, the table printed, the JSON written."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--llama-server", type=Path, help="without: qwenbot alone")
    parser.add_argument(
        "--processes", type=int, default=1,
        help="qwenbot serve processes on the same cores, clients spread over them (what "
        "uvicorn --workers N would do): 2 shows why one process per machine",
    )  # fmt: skip
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "http_load.json")  # fmt: skip
    args = parser.parse_args()
    most = max(args.clients)
    results: dict[str, dict[int, list[dict[str, Any]]]] = {"qwenbot": {}, "llama.cpp": {}}
    context = most * (args.tokens + 96)  # each slot: a question and its answer
    with ExitStack() as servers:
        ours = [servers.enter_context(qwenbot_server(args.gguf, args.threads, most))
                for _ in range(args.processes)]  # fmt: skip
        compared = [("qwenbot", ours)]
        if args.llama_server:
            theirs = llama_server(args.llama_server, args.gguf, args.threads, context, most)
            compared.append(("llama.cpp", [servers.enter_context(theirs)]))
        for clients in args.clients:
            for round_ in range(args.rounds):
                for name, addresses in compared:
                    row = one_round(addresses, clients, round_, args.tokens)
                    results[name].setdefault(clients, []).append(row)
    table = {name: {n: summary(rows) for n, rows in by_n.items()} for name, by_n in results.items()
             if by_n}  # fmt: skip
    print(f"\n{args.gguf.name}, {args.threads} threads, {args.tokens} tokens per answer, "
          f"{args.processes} qwenbot process(es)")  # fmt: skip
    if "llama.cpp" not in table:
        for n in args.clients:
            q = table["qwenbot"][n]
            print(f"{n:>7} clients  {q['tok_s']:>7.1f} tok/s  TTFT p50/p95 "
                  f"{q['ttft_p50_s']:.2f}/{q['ttft_p95_s']:.2f} s")  # fmt: skip
        save_json(args.out, {"model": str(args.gguf), "processes": args.processes,
                             "results": table})  # fmt: skip
        return
    print(f"{'clients':>7}  {'qwenbot tok/s':>13}  {'llama.cpp tok/s':>15}  {'ratio':>5}  "
          f"{'TTFT p50/p95 qwenbot':>21}  {'llama.cpp':>13}")  # fmt: skip
    for n in args.clients:
        q, l_ = table["qwenbot"][n], table["llama.cpp"][n]
        print(f"{n:>7}  {q['tok_s']:>13.1f}  {l_['tok_s']:>15.1f}  {q['tok_s'] / l_['tok_s']:>5.2f}"
              f"  {q['ttft_p50_s']:>9.2f}/{q['ttft_p95_s']:<5.2f} s  "
              f"{l_['ttft_p50_s']:>6.2f}/{l_['ttft_p95_s']:<5.2f} s")  # fmt: skip
    run = {"model": str(args.gguf), "threads": args.threads, "tokens": args.tokens}
    save_json(args.out, {**run, "rounds": args.rounds, "results": table})


if __name__ == "__main__":
    main()
