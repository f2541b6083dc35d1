"""What a qwenbot front end in remote mode costs: replies straight from an inference server
against the same replies through ENGINE__BACKEND=remote, for `qwenbot serve` and for
llama.cpp's `llama-server` as the server.

    python benchmarks/remote_hop.py --gguf qwen3-0.6b-q8_0.gguf \\
        --llama-server ~/.cache/qwenbot-bench/llama.cpp/build-noamx/bin/llama-server

One server runs at a time (each with --threads), so the two never share the cores. For
each, --rounds rounds of two replies: one streamed straight from the server (the official
`openai` client) and one through a remote Engine in this process (the front end a bot
runs; its reply cache off), in swapped order each round, each path its own questions.
Reported: time to first text and decode tokens/s, medians, and the hop's cost as their
difference and ratio. Both measure on the client side of the stream. Writes JSON to
benchmarks/results/. Never part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.http_load import qwenbot_server  # noqa: E402
from benchmarks.llama_agreement import llama_server  # noqa: E402
from benchmarks.speed_test import save_json  # noqa: E402


def direct(client: Any, question: str, tokens: int) -> tuple[float, float]:
    """One streamed reply straight from the server (an `openai` client kept for every
    round, as the engine keeps its connections): (seconds to first text, tokens/s)."""
    start, first, used, pieces = time.perf_counter(), None, None, 0
    stream = client.chat.completions.create(
        model="any", messages=[{"role": "user", "content": question}], max_tokens=tokens,
        temperature=0.0, stream=True, stream_options={"include_usage": True},
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    )  # fmt: skip
    for chunk in stream:
        if chunk.usage is not None:
            used = chunk.usage.completion_tokens
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter()
            pieces += 1
    done = time.perf_counter()
    generated = used if used is not None else pieces
    assert first is not None, "no text came back"
    return first - start, (generated - 1) / (done - first)


async def through(engine: Any, question: str) -> tuple[float, float]:
    """The same through the remote engine: (seconds to first text, tokens/s) as its reply
    stats say (measured on the stream, as the footer shows them)."""
    from engine import ChatTurn, GenerationRequest

    finished = await engine.generate(GenerationRequest(messages=(ChatTurn("user", question),)))
    return finished.stats.ttft_s, finished.stats.decode_tps


async def measure(address: str, gguf: Path, rounds: int, tokens: int) -> dict[str, Any]:
    """Alternate direct and through replies on one server; medians of each."""
    import openai

    from engine import Engine, EngineSettings

    settings = EngineSettings(model=str(gguf), backend="remote", remote_urls=(f"{address}/v1",),
                              max_new_tokens=tokens, cache_enabled=False)  # fmt: skip
    engine = Engine(settings)
    await engine.start()
    rows: dict[str, list[tuple[float, float]]] = {"direct": [], "through": []}
    client = openai.OpenAI(base_url=f"{address}/v1", api_key="unused", max_retries=0)
    try:
        for index in range(rounds + 1):  # the first round warms both paths up: not counted
            # Questions of their own (no reuse of the other's prompt state on the server),
            # and the order swapped every round, so neither path gains from going second.
            asked = {path: f"Write a short poem about {topic} (number {index})."
                     for path, topic in (("direct", "the sea"), ("through", "rain"))}  # fmt: skip
            order = ["direct", "through"] if index % 2 else ["through", "direct"]
            for path in order:
                if path == "direct":
                    got = await asyncio.to_thread(direct, client, asked[path], tokens)
                else:
                    got = await through(engine, asked[path])
                if index:
                    rows[path].append(got)
    finally:
        client.close()
        await engine.close()
    result = {
        path: {
            "ttft_s": statistics.median(t for t, _ in values),
            "tok_s": statistics.median(s for _, s in values),
        }
        for path, values in rows.items()
    }
    result["hop"] = {
        "ttft_added_ms": 1000 * (result["through"]["ttft_s"] - result["direct"]["ttft_s"]),
        "tok_s_ratio": result["through"]["tok_s"] / result["direct"]["tok_s"],
    }
    return result


def main() -> None:
    """Measure the hop in front of each server and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--llama-server", type=Path, help="llama-server binary (optional)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    servers = {"qwenbot serve": lambda: qwenbot_server(args.gguf, args.threads, 8)}
    if args.llama_server is not None:
        servers["llama-server"] = lambda: llama_server(
            args.llama_server, args.gguf, args.threads, 4096
        )
    results: dict[str, Any] = {"gguf": args.gguf.name, "threads": args.threads}
    for name, start in servers.items():
        with ExitStack() as stack:
            address = stack.enter_context(start())
            results[name] = asyncio.run(measure(address, args.gguf, args.rounds, args.tokens))
    print(f"{'server':<15} {'path':<9} {'first text':>11} {'tok/s':>7}")
    for name in servers:
        for path in ("direct", "through"):
            row = results[name][path]
            print(f"{name:<15} {path:<9} {row['ttft_s']:>10.3f}s {row['tok_s']:>7.1f}")
        hop = results[name]["hop"]
        print(f"{'':<15} hop: +{hop['ttft_added_ms']:.0f} ms to first text, "
              f"{hop['tok_s_ratio']:.2f}x tokens/s")  # fmt: skip
    save_json(ROOT / "benchmarks" / "results" / f"remote_hop-{args.gguf.stem}.json", results)


if __name__ == "__main__":
    main()
