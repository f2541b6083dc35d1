"""Engine settings: what is asked for (validated once at the settings boundary, then
read-only), and what is in effect once the model is loaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Dtype = Literal["auto", "float32", "bfloat16"]
Device = Literal["auto", "cpu", "cuda"]
# auto: int8 on a CPU (the fastest scheme whose answers stay faithful), none on CUDA.
# int8: int8 weights in blocks of 32 (llama.cpp's Q8_0) on our compiled kernel, which needs
#   a C compiler (else int8-torch).
# int8-torch: int8 weights per row on torch's kernel, activations in bf16.
# int8-dynamic: int8 weights and per-token int8 activations (fbgemm): least faithful.
# int4: 4-bit weights in blocks of 32 (Q4_1) on our compiled kernel: smallest and fastest,
#   less faithful.
# bnb8: bitsandbytes 8-bit, the seed guide's choice (saves memory, not faster on CPU).
Quantization = Literal["auto", "none", "int8", "int8-torch", "int8-dynamic", "int4", "bnb8"]
# native: our own decoder for Llama/Qwen-family models (the fast CPU path);
# transformers: the library's forward pass, for every other model and for CUDA.
Backend = Literal["auto", "native", "transformers"]


def default_data_dir() -> Path:
    """Where the cache and history live unless configured: ~/.cache/qwenbot."""
    return Path.home() / ".cache" / "qwenbot"


class EngineSettings(BaseModel):
    """Everything that decides which model runs, how, and how it answers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(
        "Qwen/Qwen3-0.6B",
        min_length=1,
        description="Hugging Face id, local folder, or local .gguf file",
    )
    revision: str | None = Field(None, description="hub revision (branch, tag or commit)")
    gguf_file: str | None = Field(None, description="GGUF file name inside a folder or hub repo")
    device: Device = "auto"
    dtype: Dtype = "auto"
    quantization: Quantization = "auto"
    backend: Backend = "auto"
    compile: bool = False
    threads: int | None = Field(
        None, ge=1, le=512, description="intra-op threads; unset = physical cores, capped"
    )
    max_threads: int = Field(8, ge=1, le=512, description="cap for the automatic thread count")
    interop_threads: int = Field(1, ge=1, le=64)
    max_new_tokens: int = Field(256, ge=1, le=32768)
    max_input_tokens: int = Field(
        12288, ge=16, description="longest rendered prompt accepted (a long paste, history)"
    )
    temperature: float = Field(0.0, ge=0.0, le=5.0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0)
    enable_thinking: bool = False
    queue_size: int = Field(
        256, ge=1, le=10000, description="requests waiting at most, whatever the wait"
    )
    max_wait_s: float = Field(
        120.0, gt=0, description="refuse a request only when it would wait longer than this"
    )
    max_queued_per_user: int = Field(
        2, ge=1, le=10000, description="requests one user may have waiting (fairness)"
    )
    max_batch: int = Field(8, ge=1, le=256, description="replies decoded together, one step each")
    prefill_chunk_tokens: int = Field(
        256, ge=16, le=65536, description="prompt tokens read per step (long prompts in chunks)"
    )
    prefix_cache_mb: int = Field(
        1024, ge=0, description="memory for chats' kept state between turns (0: keep none)"
    )
    warmup: bool = True
    packed_cache_mb: int = Field(
        4096, ge=0, description="disk for packed weights mapped at later starts (0: none)"
    )
    cache_enabled: bool = True
    cache_dir: Path = Field(default_factory=lambda: default_data_dir() / "responses")
    cache_size_mb: int = Field(256, ge=1)

    @field_validator("cache_dir")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()


@dataclass(frozen=True)
class EffectiveConfig:
    """What is actually in effect after fallbacks, for the start-up line and /stats."""

    model: str
    device: str
    dtype: str
    backend: str
    quantization: str
    compiled: bool
    threads: int
    interop_threads: int
    fallbacks: tuple[str, ...] = ()

    def summary(self) -> str:
        """One line: model, dtype, quantisation, compile state and threads."""
        return (
            f"model {self.model} · {self.device} · {self.dtype} · {self.backend} decoder · "
            f"quantization {self.quantization} · compile {'on' if self.compiled else 'off'} · "
            f"{self.threads} threads"
        )
