"""Speed of one engine configuration: TTFT, decode tok/s, total time, peak RSS.

    python benchmarks/speed_test.py --arch qwen3-0.6b --random-weights
    python benchmarks/speed_test.py --model /models/qwen3-0.6b.gguf --quantization int8

Several runs after a warm-up; prints medians with min/max and writes JSON. With random
weights the exact Qwen3-0.6B architecture is built offline (config in qwen3_0_6b.json) and
generation is forced to its full length, since speed does not depend on weight values.
Never part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Qwen3's published shapes (config.json of Qwen/Qwen3-0.6B, -1.7B and -4B), for random weights.
ARCH_CONFIGS = {
    name: ROOT / "benchmarks" / f"{name.replace('-', '_').replace('.', '_')}.json"
    for name in ("qwen3-0.6b", "qwen3-1.7b", "qwen3-4b")
}
PROMPT_WORDS = "The quick brown fox jumps over the lazy dog while the river keeps flowing."


def random_weights_folder(arch: str) -> Path:
    """Build (once, then reuse) a folder with the architecture, random bf16 weights and the
    real Qwen tokenizer."""
    import torch
    import transformers

    # The offline Qwen tokenizer builder lives with the test fixtures (needs `.[dev]`).
    from tests.support.tiny_qwen import build_qwen_tokenizer

    folder = Path.home() / ".cache" / "qwenbot" / "bench" / f"{arch}-random"
    if (folder / "model.safetensors").is_file():
        return folder
    config = transformers.AutoConfig.for_model(**json.loads(ARCH_CONFIGS[arch].read_text()))
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).to(torch.bfloat16)
    model.generation_config.eos_token_id = [151645, 151643]
    model.save_pretrained(folder)
    build_qwen_tokenizer().save_pretrained(folder)
    return folder


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, or --arch with --random-weights: what a benchmark runs."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="hub id, local folder or .gguf file")
    source.add_argument("--arch", choices=sorted(ARCH_CONFIGS), help="a known architecture")
    parser.add_argument("--random-weights", action="store_true", help="with --arch")


def chosen_model(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The model folder or id the arguments name (building the random-weights folder)."""
    if args.arch and not args.random_weights:
        parser.error("--arch needs --random-weights (no hub downloads here)")
    return str(random_weights_folder(args.arch)) if args.arch else str(args.model)


def save_json(path: Path, result: Any) -> None:
    """Write a benchmark's result as JSON and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


def prompt_of(tokens: int, count: Any) -> str:
    """A user message whose rendered chat prompt is close to `tokens` tokens."""
    from engine.events import ChatTurn

    words = PROMPT_WORDS.split()
    text = ""
    while count((ChatTurn("user", text + " " + words[0]),)) <= tokens:
        text += " " + words[len(text.split()) % len(words)]
    return text.strip()


async def measure(args: argparse.Namespace, model: str) -> dict[str, Any]:
    """Start the engine, warm up, then time args.runs generations."""
    from engine.config import EngineSettings
    from engine.engine import Engine
    from engine.events import ChatTurn, GenerationRequest

    settings = EngineSettings(
        model=model,
        dtype=args.dtype,
        quantization=args.quantization,
        backend=args.backend,
        compile=args.compile,
        threads=args.threads,
        cache_enabled=False,
        prefix_cache_mb=0,  # each run reads its whole prompt, as a new chat's first message does
    )
    engine = Engine(settings)
    started = time.perf_counter()
    config = await engine.start()
    startup_s = time.perf_counter() - started
    text = prompt_of(args.prompt_tokens, engine.count_tokens)
    request = GenerationRequest(
        (ChatTurn("user", text),), max_new_tokens=args.new_tokens, ignore_stop=True
    )
    await engine.generate(request)  # warm-up at the measured shapes
    runs = []
    for _ in range(args.runs):
        stats = (await engine.generate(request)).stats
        runs.append(
            {"ttft_s": stats.ttft_s, "decode_tps": stats.decode_tps, "total_s": stats.total_s}
        )
    prompt_tokens = stats.prompt_tokens
    await engine.close()
    return {
        "config": config.summary(),
        "fallbacks": list(config.fallbacks),
        "prompt_tokens": prompt_tokens,
        "new_tokens": args.new_tokens,
        "startup_s": startup_s,
        "runs": runs,
        # Linux reports ru_maxrss in KiB.
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def summarise(result: dict[str, Any]) -> list[tuple[str, str]]:
    """Median (min-max) of each per-run figure."""
    rows = []
    for key, label in (
        ("ttft_s", "TTFT s"),
        ("decode_tps", "decode tok/s"),
        ("total_s", "total s"),
    ):
        values = [run[key] for run in result["runs"]]
        rows.append(
            (label, f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})")
        )
    rows.append(("peak RSS MB", f"{result['peak_rss_mb']:.0f}"))
    rows.append(("start-up s", f"{result['startup_s']:.1f}"))
    return rows


def main() -> int:
    """Parse arguments, measure, print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument(
        "--quantization",
        default="auto",
        choices=["auto", "none", "int8", "int8-torch", "int8-dynamic", "int4", "bnb8"],
    )
    parser.add_argument("--backend", default="auto", choices=["auto", "native", "transformers"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--prompt-tokens", type=int, default=100)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "speed.json")
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    from rich.console import Console
    from rich.table import Table

    model = chosen_model(parser, args)
    result = asyncio.run(measure(args, model))
    result["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    table = Table(
        title=f"{result['config']} · {result['prompt_tokens']}-token prompt, "
        f"{args.new_tokens} new tokens, {args.runs} runs"
    )
    table.add_column("figure")
    table.add_column("median (min-max)")
    for row in summarise(result):
        table.add_row(*row)
    Console().print(table)
    save_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
