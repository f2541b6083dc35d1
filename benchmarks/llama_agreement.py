"""llama.cpp's own top-1 agreement on a GGUF file, teacher-forced like fidelity.py's rows.

llama.cpp's server (`llama-server`) is started on the file on a free loopback port; for each
prompt and each position of the reference's answer it is asked for one greedy token after
the prompt and the answer so far (its prompt cache keeps the shared prefix, so each request
reads one new token). Benchmarks only: ../shared/tools/build-llama-cpp.sh builds the server
(on a CPU with AMX, use a build without AMX: see startup.py).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from tests.support.http_server import free_port


@contextmanager
def llama_server(
    binary: Path, model: Path, threads: int, context: int, slots: int = 1
) -> Iterator[str]:
    """A running llama-server on the model (context shared by its slots); yields its base
    address."""
    port = free_port()
    command = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
               "-t", str(threads), "-c", str(context), "-np", str(slots)]  # fmt: skip
    address = f"http://127.0.0.1:{port}"
    # Its log goes to a file: a pipe nobody reads fills up and stalls the server.
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_until_healthy(server, address, log)
            yield address
        finally:
            server.terminate()
            server.wait(timeout=30)


def _wait_until_healthy(server: subprocess.Popen[bytes], address: str, log: IO[bytes]) -> None:
    deadline = time.monotonic() + 120
    while True:
        if server.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"llama-server stopped: {log.read()[-2000:]!r}")
        try:
            with urllib.request.urlopen(f"{address}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def next_token(address: str, ids: list[int]) -> int:
    """llama.cpp's greedy next token after these ids."""
    body = {"prompt": ids, "n_predict": 1, "temperature": 0.0, "top_k": 1,
            "cache_prompt": True, "return_tokens": True}  # fmt: skip
    request = urllib.request.Request(
        f"{address}/completion", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as answer:
        return int(json.load(answer)["tokens"][0])


def llama_agreement(
    binary: Path, model: Path, prompts: list[list[int]], answers: list[list[int]], threads: int
) -> float:
    """Share of positions where llama.cpp's top-1 on the file equals the reference token."""
    longest = max(len(ids) + len(answer) for ids, answer in zip(prompts, answers, strict=True))
    matches = total = 0
    with llama_server(binary, model, threads, max(512, longest + 16)) as address:
        for ids, answer in zip(prompts, answers, strict=True):
            for position, token in enumerate(answer):
                matches += int(next_token(address, ids + answer[:position]) == token)
                total += 1
    return matches / total
