"""The three kinds of worker compare_speed.py measures: the recipe, the engine, llama.cpp."""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import time
from typing import Any

from benchmarks.speed_test import prompt_of


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RecipeWorker:
    """The seed guide: transformers generate() in fp32, eager, greedy."""

    def __init__(self, model: str, prompt_tokens: int, new_tokens: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from engine.events import ChatTurn

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
        self.new_tokens = new_tokens

        def count(turns: tuple[ChatTurn, ...]) -> int:
            return len(self._ids(turns[0].content)[0])

        self.ids = self._ids(prompt_of(prompt_tokens, count))

    def _ids(self, text: str) -> Any:
        rendered = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        return self.tokenizer(rendered, return_tensors="pt", add_special_tokens=False).input_ids

    def run(self) -> dict[str, float]:
        """One timed generation of exactly new_tokens tokens."""
        from transformers.generation.streamers import BaseStreamer

        times: list[float] = []

        class Clock(BaseStreamer):  # type: ignore[misc]
            def put(self, value: Any) -> None:
                times.append(time.perf_counter())

            def end(self) -> None:
                pass

        started = time.perf_counter()
        with self.torch.inference_mode():
            self.model.generate(
                self.ids,
                max_new_tokens=self.new_tokens,
                min_new_tokens=self.new_tokens,
                do_sample=False,
                streamer=Clock(),
            )
        tokens = times[1:]  # the first put() is the prompt itself
        return {
            "ttft_s": tokens[0] - started,
            "decode_tps": (len(tokens) - 1) / (tokens[-1] - tokens[0]),
            "total_s": tokens[-1] - started,
            "prompt_tokens": int(self.ids.shape[1]),
        }


class EngineWorker:
    """One qwenbot engine configuration, driven through Engine.generate like the bot."""

    def __init__(self, model: str, settings: dict[str, Any], args: argparse.Namespace) -> None:
        from engine.config import EngineSettings
        from engine.engine import Engine
        from engine.events import ChatTurn, GenerationRequest

        self.loop = asyncio.new_event_loop()
        self.engine = Engine(
            # No kept state: every run reads its whole prompt, as a new chat's first message.
            EngineSettings(
                model=model,
                cache_enabled=False,
                prefix_cache_mb=0,
                threads=args.threads,
                **settings,
            )
        )
        started = time.perf_counter()
        self.config = self.loop.run_until_complete(self.engine.start())
        self.startup_s = time.perf_counter() - started
        text = prompt_of(args.prompt_tokens, self.engine.count_tokens)
        self.request = GenerationRequest(
            (ChatTurn("user", text),), max_new_tokens=args.new_tokens, ignore_stop=True
        )

    def run(self) -> dict[str, float]:
        """One timed reply of exactly new_tokens tokens."""
        stats = self.loop.run_until_complete(self.engine.generate(self.request)).stats
        return {
            "ttft_s": stats.ttft_s,
            "decode_tps": stats.decode_tps,
            "total_s": stats.total_s,
            "prompt_tokens": stats.prompt_tokens,
        }


class LlamaCppWorker:
    """llama.cpp (llama-cpp-python) on a GGUF of the same weights: the peer to beat."""

    def __init__(self, gguf: str, args: argparse.Namespace, prompt_text: str) -> None:
        from llama_cpp import Llama

        threads = args.threads or len(os.sched_getaffinity(0))
        started = time.perf_counter()
        self.llm = Llama(gguf, n_ctx=1024, n_threads=threads, n_batch=512, verbose=False)
        self.startup_s = time.perf_counter() - started
        self.prompt = self.llm.tokenize(prompt_text.encode(), add_bos=False, special=True)
        self.new_tokens = args.new_tokens

    def run(self) -> dict[str, float]:
        """One timed generation; end-of-text is ignored so every run has the same length."""
        self.llm.reset()
        started = time.perf_counter()
        times = []
        for _ in self.llm.generate(self.prompt, temp=0.0, reset=True):
            times.append(time.perf_counter())
            if len(times) == self.new_tokens:
                break
        return {
            "ttft_s": times[0] - started,
            "decode_tps": (len(times) - 1) / (times[-1] - times[0]),
            "total_s": times[-1] - started,
            "prompt_tokens": len(self.prompt),
        }
