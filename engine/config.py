"""Engine settings: what is asked for (validated once at the settings boundary, then
read-only), and what is in effect once the model is loaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

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
# transformers: the library's forward pass, for every other model and for CUDA;
# remote: OpenAI-compatible servers elsewhere (ENGINE__REMOTE_URLS) generate; only the
#   model's tokenizer is loaded here (history trimming, limits, reply cache keys).
Backend = Literal["auto", "native", "transformers", "remote"]
# How the native decoder's packed weights read a prompt (engine/native/packed_linear.py):
# int16 / int8: activations in blocks of 32 as 15-bit or 8-bit integers on our kernel
#   (int8 dot products: AVX-512 VNNI or AMX tiles); int8 is faster and less faithful;
# bf16: torch's bf16 GEMM on the weights de-quantised;
# auto: int16 where it is faster (CPUs with AVX-512 VNNI and no AMX; with AMX, passes under
#   64 rows), bf16 elsewhere.
PromptMatmul = Literal["auto", "int16", "int8", "bf16"]


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
    prompt_matmul: PromptMatmul = "auto"
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
    speculate_tokens: int = Field(
        8, ge=0, le=32, description="greedy replies: tokens guessed from the chat per step (0: off)"
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
    remote_urls: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="backend=remote: OpenAI-compatible base URLs (…/v1), comma-separated"
    )
    remote_api_key: SecretStr | None = Field(None, description="Bearer key for those servers")
    remote_model: str | None = Field(None, description="model name to ask for; unset: theirs")
    remote_concurrency: int = Field(8, ge=1, le=1024, description="requests at once per URL")
    remote_timeout_s: float = Field(120.0, gt=0, description="longest silence within a reply")

    @field_validator("cache_dir")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("remote_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.rstrip("/") for part in value.replace(",", " ").split() if part)
        return value

    @model_validator(mode="after")
    def _remote_needs_urls(self) -> EngineSettings:
        if self.backend == "remote" and not self.remote_urls:
            raise ValueError("backend=remote needs ENGINE__REMOTE_URLS")
        bad = [url for url in self.remote_urls if not url.startswith(("http://", "https://"))]
        if bad:
            raise ValueError(f"remote URLs start with http:// or https://, not {bad[0]!r}")
        return self


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
    servers: tuple[str, ...] = ()  # backend remote: where replies are generated
    prompts: str = ""  # how packed weights read prompts: "int16", "bf16", ...; "" not packed

    def summary(self) -> str:
        """One line: model, dtype, quantisation, compile state and threads."""
        if self.backend == "remote":
            where = ", ".join(self.servers)
            return f"model {self.model} · remote inference on {where}"
        return (
            f"model {self.model} · {self.device} · {self.dtype} · {self.backend} decoder · "
            f"quantization {self.quantization} · "
            + (f"prompts {self.prompts} · " if self.prompts else "")
            + f"compile {'on' if self.compiled else 'off'} · "
            f"{self.threads} threads"
        )
