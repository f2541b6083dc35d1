"""The guide's recipe (fp32 eager generate), each engine configuration and llama.cpp.

    python benchmarks/compare_speed.py --arch qwen3-0.6b --random-weights
    python benchmarks/compare_speed.py --arch qwen3-0.6b --random-weights \
        --gguf q8_0=/models/qwen3-0.6b-random-q8_0.gguf

Each configuration lives in its own worker process (so each has its own peak RSS), loads
once, and the runs are interleaved round-robin: run 1 of every configuration, then run 2,
... so a noisy neighbour slows all of them alike. Only one worker computes at a time.
Prints medians and each one's decode speed relative to the recipe; writes JSON. llama.cpp
joins when llama-cpp-python is installed and a GGUF of the same weights is given.
Never part of the test run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.speed_test import (  # noqa: E402
    ARCH_CONFIGS,
    prompt_of,
    random_weights_folder,
    save_json,
)
from benchmarks.speed_workers import (  # noqa: E402
    EngineWorker,
    LlamaCppWorker,
    RecipeWorker,
    peak_rss_mb,
)

# name -> engine settings; "recipe" is the seed guide's fp32 eager generate().
ENGINE_CONFIGS: dict[str, dict[str, Any]] = {
    "default (int8)": {"quantization": "auto"},
    "int8-torch": {"quantization": "int8-torch"},
    "int8-dynamic": {"quantization": "int8-dynamic"},
    "int4": {"quantization": "int4"},
    "bf16 native": {"quantization": "none"},
    "bf16 transformers": {"quantization": "none", "backend": "transformers"},
}


def worker_main(spec: dict[str, Any], args: argparse.Namespace) -> None:
    """Load one configuration, then answer 'run' lines with JSON lines until 'quit'."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    started = time.perf_counter()
    worker: Any
    if spec["kind"] == "recipe":
        worker = RecipeWorker(spec["model"], args.prompt_tokens, args.new_tokens)
        info = {"config": "transformers generate, float32, eager (the guide's recipe)"}
    elif spec["kind"] == "llama.cpp":
        worker = LlamaCppWorker(spec["gguf"], args, spec["prompt_text"])
        info = {"config": f"llama.cpp {Path(spec['gguf']).name}"}
    else:
        worker = EngineWorker(spec["model"], spec["settings"], args)
        info = {"config": worker.config.summary(), "fallbacks": list(worker.config.fallbacks)}
    info["startup_s"] = time.perf_counter() - started
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        result = worker.run()
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result), flush=True)


def start_worker(spec: dict[str, Any], args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """Spawn a worker process and wait until its model is loaded."""
    command = [sys.executable, __file__, "--worker", json.dumps(spec)]
    for flag in ("prompt_tokens", "new_tokens", "threads"):
        value = getattr(args, flag)
        if value is not None:
            command += [f"--{flag.replace('_', '-')}", str(value)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    header = json.loads(process.stdout.readline())
    return process, header


def rendered_prompt(model: str, prompt_tokens: int) -> str:
    """The exact chat-rendered prompt the engine sends, for llama.cpp to receive the same."""
    from transformers import AutoTokenizer

    from engine.events import ChatTurn

    tokenizer = AutoTokenizer.from_pretrained(model)

    def render(turns: tuple[ChatTurn, ...]) -> str:
        messages = [{"role": t.role, "content": t.content} for t in turns]
        text: str = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
        )
        return text

    text = prompt_of(prompt_tokens, lambda turns: len(tokenizer(render(turns)).input_ids))
    return render((ChatTurn("user", text),))


def run_all(args: argparse.Namespace, model: str) -> dict[str, Any]:
    """Start every worker, interleave the runs, collect the results."""
    specs: dict[str, dict[str, Any]] = {}
    if not args.skip_recipe:
        specs["recipe"] = {"kind": "recipe", "model": model}
    for name in args.configs:
        specs[name] = {"kind": "engine", "model": model, "settings": ENGINE_CONFIGS[name]}
    if args.gguf:
        prompt_text = rendered_prompt(model, args.prompt_tokens)
        for label, path in (item.split("=", 1) for item in args.gguf):
            specs[f"llama.cpp {label}"] = {
                "kind": "llama.cpp",
                "gguf": path,
                "prompt_text": prompt_text,
            }
    workers: dict[str, tuple[Any, dict[str, Any]]] = {}
    for name, spec in specs.items():  # loaded one after another: start-up is timed alone
        print(f"loading {name} ...", file=sys.stderr, flush=True)
        workers[name] = start_worker(spec, args)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in specs}
    for index in range(args.runs + 1):  # round 0 is a warm-up at the measured shapes
        for name, (process, _) in workers.items():
            process.stdin.write("run\n")
            process.stdin.flush()
            result = json.loads(process.stdout.readline())
            if index > 0:
                runs[name].append(result)
        print(f"round {index}/{args.runs} done", file=sys.stderr, flush=True)
    for process, _ in workers.values():
        process.stdin.write("quit\n")
        process.stdin.flush()
        process.wait(timeout=60)
    return {name: {**workers[name][1], "runs": runs[name]} for name in specs}


def summarise(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Medians per configuration and decode speed relative to the recipe (or the first)."""
    rows = []
    for name, result in results.items():
        runs = result["runs"]
        rows.append(
            {
                "name": name,
                "config": result["config"],
                "ttft_s": statistics.median(r["ttft_s"] for r in runs),
                "decode_tps": statistics.median(r["decode_tps"] for r in runs),
                "decode_min": min(r["decode_tps"] for r in runs),
                "decode_max": max(r["decode_tps"] for r in runs),
                "total_s": statistics.median(r["total_s"] for r in runs),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                "startup_s": result["startup_s"],
                "prompt_tokens": runs[0]["prompt_tokens"],
            }
        )
    base = rows[0]["decode_tps"]
    for row in rows:
        row["ratio"] = row["decode_tps"] / base
    return rows


def main() -> int:
    """Parse arguments, run the comparison, print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model", help="hub id, local folder (safetensors)")
    parser.add_argument("--arch", choices=sorted(ARCH_CONFIGS), default="qwen3-0.6b")
    parser.add_argument("--random-weights", action="store_true", help="with --arch (default)")
    parser.add_argument(
        "--configs", nargs="+", default=list(ENGINE_CONFIGS), choices=list(ENGINE_CONFIGS)
    )
    parser.add_argument("--skip-recipe", action="store_true")
    parser.add_argument(
        "--gguf", action="append", default=[], metavar="LABEL=PATH", help="llama.cpp peer"
    )
    parser.add_argument("--threads", type=int)
    parser.add_argument("--prompt-tokens", type=int, default=100)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "compare_speed.json"
    )
    args = parser.parse_args()
    if args.worker:
        worker_main(json.loads(args.worker), args)
        return 0
    os.environ.setdefault("TQDM_DISABLE", "1")
    from rich.console import Console
    from rich.table import Table

    model = args.model or str(random_weights_folder(args.arch))
    rows = summarise(run_all(args, model))
    table = Table(
        title=f"{Path(model).name} · {rows[0]['prompt_tokens']}-token prompt, "
        f"{args.new_tokens} new tokens, batch 1, {args.threads or 'auto'} threads, "
        f"median of {args.runs} interleaved runs"
    )
    for column in ("configuration", "decode tok/s", "vs recipe", "TTFT s", "total s"):
        table.add_column(column)
    for column in ("peak RSS MB", "start-up s"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["name"],
            f"{row['decode_tps']:.1f} ({row['decode_min']:.1f}-{row['decode_max']:.1f})",
            f"{row['ratio']:.2f}x",
            f"{row['ttft_s']:.3f}",
            f"{row['total_s']:.2f}",
            f"{row['peak_rss_mb']:.0f}",
            f"{row['startup_s']:.1f}",
        )
    Console().print(table)
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    save_json(args.json, {"machine": machine, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
