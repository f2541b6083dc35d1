"""What a remote backend loads here: the model's tokenizer and config only (for history
trimming, input limits and reply cache keys); the weights stay on the inference servers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.config import EffectiveConfig, EngineSettings
from engine.loading.fingerprint import model_fingerprint
from engine.loading.kept_tokenizers import tokenizer_and_config
from engine.loading.model_source import ModelSource, find_model
from engine.loading.stages import ProgressCallback, Stages, no_progress

if TYPE_CHECKING:
    from engine.text.tokenizing import TextTokenizer

REMOTE = "remote"


@dataclass
class RemoteModel:
    """The local half of a remote backend: the same face as LoadedModel for prompts,
    limits and cache keys."""

    config: Any
    tokenizer: TextTokenizer
    source: ModelSource
    fingerprint: str
    servers: tuple[str, ...]
    backend: str = REMOTE
    quantization: str = REMOTE  # whatever the servers run: part of the reply cache key
    dtype: str = REMOTE

    def effective(self) -> EffectiveConfig:
        """What is in effect: this model's tokenizer here, generation on the servers."""
        return EffectiveConfig(
            model=self.source.display_name,
            device=REMOTE,
            dtype=REMOTE,
            backend=REMOTE,
            quantization=REMOTE,
            compiled=False,
            threads=0,
            interop_threads=0,
            servers=self.servers,
        )


def load_tokenizer_only(
    settings: EngineSettings, progress: ProgressCallback = no_progress
) -> RemoteModel:
    """Find ENGINE__MODEL (the model the servers run) and read its tokenizer and config."""
    stages = Stages(progress)
    with stages.stage(f"Looking for {settings.model}", (0.0, 0.2)) as stage:
        source = find_model(settings)
        stage.done = f"found model {source.display_name} (its tokenizer only: backend remote)"
    with stages.stage(f"Loading tokenizer of {source.display_name}", (0.2, 1.0)) as stage:
        files = tokenizer_and_config(source, plain=True)
        stage.done = "loaded the tokenizer and config"
    stages.ready()
    commit = getattr(files.config, "_commit_hash", None)
    return RemoteModel(
        config=files.config,
        tokenizer=files.tokenizer,
        source=source,
        # Replies of the servers' model, keyed apart from this machine's own runs of it.
        fingerprint=f"{REMOTE}:{settings.remote_model or ''}:{model_fingerprint(source, commit)}",
        servers=settings.remote_urls,
    )
