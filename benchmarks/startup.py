"""A fresh process answering one question: qwenbot chat against llama.cpp on the same file.

    python benchmarks/startup.py --gguf ~/models/qwen3-0.6b-q8_0.gguf --gguf ~/models/q4_k_m.gguf
    python benchmarks/startup.py --folder ~/.cache/qwenbot/bench/qwen3-0.6b-random \\
        --gguf ~/models/qwen3-0.6b-q8_0.gguf

For each model, runs alternate: `qwenbot chat` with the question on stdin (a --tokens long
answer, the reply cache off), then llama.cpp's `llama-simple` with the same question and
token count, --runs times. Reported as medians: whole-process wall time, the weights'
load time (qwenbot's "loaded weights" stage, llama.cpp's "load time") and peak RSS (the
child's ru_maxrss). The first qwenbot start of each model runs with an empty cache folder
(it converts the tokenizer and packs the weights: what a user's very first start costs);
the runs after it reuse that folder, as every later start does. Decode speed: qwenbot's
own tok/s over a --decode-tokens answer, and `llama-bench -p 0 -n --decode-tokens -t
--threads`, alternating too. llama.cpp tools: ../shared/tools/build-llama-cpp.sh (on a CPU
with AMX its native build crashes on Q8_0; build it with -DGGML_NATIVE=OFF and the AVX-512
flags, as the README says; its AMX build still runs llama-bench, the fastest decode there:
give it as --llama-bench-bin). Writes JSON to benchmarks/results/. Never part of the tests.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.speed_test import save_json  # noqa: E402

QUESTION = "What is the capital of France?"
DEFAULT_LLAMA = Path.home() / ".cache" / "qwenbot-bench" / "llama.cpp" / "bin"


def timed(command: list[str], stdin: str, env: dict[str, str]) -> tuple[float, float, str]:
    """Run a child to its end: (wall seconds, peak RSS in MB, its stdout and stderr)."""
    start = time.perf_counter()
    child = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=env, text=True, errors="replace",  # a random model prints broken UTF-8
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(stdin)
    child.stdin.close()
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if child.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({child.returncode}):\n{output[-2000:]}")
    return wall, usage.ru_maxrss / 1024, output


def qwenbot(model: Path, tokens: int, cache: Path, threads: int) -> dict[str, float]:
    """One `qwenbot chat` answer in a fresh process."""
    env = os.environ | {
        "ENGINE__MODEL": str(model),
        "ENGINE__MAX_NEW_TOKENS": str(tokens),
        "ENGINE__CACHE_ENABLED": "false",
        "ENGINE__THREADS": str(threads),
        "XDG_CACHE_HOME": str(cache),
        "BOT__HISTORY_DIR": str(cache / "history"),
    }
    command = [sys.executable, "-m", "bot", "chat", "--log-level", "INFO"]
    wall, rss, output = timed(command, QUESTION + "\n", env)
    loaded = re.search(r"loaded weights .* in ([0-9.]+) s", output)
    speed = re.search(r"([0-9.]+) tok/s", output)
    return {
        "wall_s": wall,
        "rss_mb": rss,
        "load_s": float(loaded.group(1)) if loaded else float("nan"),
        "tok_s": float(speed.group(1)) if speed else float("nan"),
    }


def llama_simple(tools: Path, model: Path, tokens: int) -> dict[str, float]:
    """llama.cpp's minimal program answering the same question (it picks its own threads)."""
    command = [str(tools / "llama-simple"), "-m", str(model), "-n", str(tokens), QUESTION]
    wall, rss, output = timed(command, "", dict(os.environ))
    loaded = re.search(r"load time =\s*([0-9.]+) ms", output)
    return {
        "wall_s": wall,
        "rss_mb": rss,
        "load_s": float(loaded.group(1)) / 1000 if loaded else float("nan"),
    }


def llama_decode(tools: Path, model: Path, tokens: int, threads: int) -> float:
    """llama-bench's decode speed (tokens per second, no prompt) on the given threads."""
    command = [str(tools / "llama-bench"), "-m", str(model), "-p", "0", "-n", str(tokens),
               "-t", str(threads), "-r", "2", "-o", "csv"]  # fmt: skip
    _, _, output = timed(command, "", dict(os.environ))
    row = [line for line in output.splitlines() if line.startswith('"') and "avg_ts" not in line][
        -1
    ]
    header = next(line for line in output.splitlines() if "avg_ts" in line)
    fields = dict(
        zip(header.replace('"', "").split(","), row.replace('"', "").split(","), strict=False)
    )
    return float(fields["avg_ts"])


def median(rows: list[dict[str, float]], key: str) -> float:
    """The median of one column."""
    return statistics.median(row[key] for row in rows)


def measure(model: Path, args: argparse.Namespace, is_gguf: bool) -> dict[str, Any]:
    """First start, then --runs alternating fresh starts (and decode), for one model."""
    cache = Path(tempfile.mkdtemp(prefix="qwenbot-startup-"))
    first = qwenbot(model, args.tokens, cache, args.threads)
    ours, theirs, our_decode, their_decode = [], [], [], []
    for _ in range(args.runs):
        ours.append(qwenbot(model, args.tokens, cache, args.threads))
        if is_gguf and args.llama_bin:
            theirs.append(llama_simple(args.llama_bin, model, args.tokens))
        our_decode.append(qwenbot(model, args.decode_tokens, cache, args.threads)["tok_s"])
        if is_gguf and args.llama_bin:
            their_decode.append(
                llama_decode(args.llama_bench_bin, model, args.decode_tokens, args.threads)
            )
    result: dict[str, Any] = {
        "model": str(model),
        "file_mb": model.stat().st_size / 2**20 if model.is_file() else None,
        "qwenbot_first_start": first,
        "qwenbot": {key: median(ours, key) for key in ("wall_s", "rss_mb", "load_s")},
        "qwenbot_decode_tok_s": statistics.median(our_decode),
    }
    if theirs:
        result["llama.cpp"] = {key: median(theirs, key) for key in ("wall_s", "rss_mb", "load_s")}
        result["llama.cpp_decode_tok_s"] = statistics.median(their_decode)
    return result


def report(result: dict[str, Any]) -> None:
    """One model's lines."""
    ours, first = result["qwenbot"], result["qwenbot_first_start"]
    size = f" ({result['file_mb']:.0f} MB)" if result["file_mb"] else ""
    print(f"\n{Path(result['model']).name}{size}")

    def line(name: str, row: dict[str, float], decode: float | None = None) -> None:
        speed = f"  decode {decode:.1f} tok/s" if decode is not None else ""
        print(f"  {name:22} {row['wall_s']:6.2f} s  load {row['load_s']:5.2f} s  "
              f"{row['rss_mb']:6.0f} MB{speed}")  # fmt: skip

    line("qwenbot first start", first)
    line("qwenbot later starts", ours, result["qwenbot_decode_tok_s"])
    if "llama.cpp" in result:
        theirs, their_speed = result["llama.cpp"], result["llama.cpp_decode_tok_s"]
        line("llama.cpp", theirs, their_speed)
        print(
            f"  qwenbot / llama.cpp: time {ours['wall_s'] / theirs['wall_s']:.2f}x "
            f"(first start {first['wall_s'] / theirs['wall_s']:.2f}x), "
            f"RSS {ours['rss_mb'] / theirs['rss_mb']:.2f}x, "
            f"decode {result['qwenbot_decode_tok_s'] / their_speed:.2f}x"
        )


def main() -> None:
    """Measure each model given, print the comparison, write the JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gguf", type=Path, action="append", default=[], help="a .gguf file")
    parser.add_argument(
        "--folder", type=Path, action="append", default=[], help="a safetensors folder"
    )
    parser.add_argument(
        "--llama-bin", type=Path, default=DEFAULT_LLAMA if DEFAULT_LLAMA.is_dir() else None
    )
    parser.add_argument(
        "--llama-bench-bin", type=Path, default=None, help="llama-bench's folder (--llama-bin)"
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=16, help="the answer's length")
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "startup.json"
    )
    args = parser.parse_args()
    if not args.gguf and not args.folder:
        parser.error("give at least one --gguf or --folder")
    args.llama_bench_bin = args.llama_bench_bin or args.llama_bin
    results = [measure(path.expanduser(), args, is_gguf=True) for path in args.gguf]
    results += [measure(path.expanduser(), args, is_gguf=False) for path in args.folder]
    for result in results:
        report(result)
    machine = {"cpu": platform.processor() or platform.machine(), "threads": args.threads}
    save_json(
        args.out, {"machine": machine, "runs": args.runs, "tokens": args.tokens, "results": results}
    )


if __name__ == "__main__":
    main()
