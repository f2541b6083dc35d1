"""Where the model comes from: a hub id (cached or not), a local folder, or a local .gguf file."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import huggingface_hub

from engine.config import EngineSettings
from engine.errors import ModelNotFound
from engine.loading.model_names import PackageMissing, expand, offline_hint

HOW_TO_POINT_LOCALLY = (
    "set ENGINE__MODEL to a local model folder (with config.json) or a .gguf file, "
    "e.g. ENGINE__MODEL=/models/Qwen3-0.6B or ENGINE__MODEL=/models/qwen3-0.6b-q8_0.gguf "
    "(`qwenbot models` lists what is here)"
)


@dataclass(frozen=True)
class ModelSource:
    """A resolved model location that transformers' from_pretrained understands."""

    location: str  # hub id or local folder
    gguf_file: str | None
    is_local: bool
    revision: str | None
    cached: bool = False  # a hub model already in the local Hugging Face cache
    commit: str | None = None  # the cached snapshot's commit, when known

    @property
    def display_name(self) -> str:
        """Short name for logs and the start-up line."""
        if self.gguf_file:
            return self.gguf_file
        return Path(self.location).name if self.is_local else self.location


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~")) or text.endswith(".gguf") or "\\" in text


def resolve_source(settings: EngineSettings) -> ModelSource:
    """Turn the model setting (a short name too: smollm2, qwen3-0.6b) into a source, failing
    early when a local path is missing."""
    try:
        raw = expand(settings.model.strip())
    except PackageMissing as error:
        raise ModelNotFound(str(error)) from None
    path = Path(raw).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelNotFound(f"model file {path} does not exist; {HOW_TO_POINT_LOCALLY}")
        return ModelSource(str(path.parent.resolve()), path.name, True, None)
    if path.is_dir():
        if settings.gguf_file is None and not (path / "config.json").is_file():
            ggufs = sorted(p.name for p in path.glob("*.gguf"))
            if len(ggufs) != 1:
                raise ModelNotFound(
                    f"folder {path} has no config.json and "
                    f"{'several' if ggufs else 'no'} .gguf files; {HOW_TO_POINT_LOCALLY}"
                )
            return ModelSource(str(path.resolve()), ggufs[0], True, None)
        return ModelSource(str(path.resolve()), settings.gguf_file, True, None)
    if _looks_like_path(raw):
        raise ModelNotFound(f"model path {path} does not exist; {HOW_TO_POINT_LOCALLY}")
    return ModelSource(raw, settings.gguf_file, False, settings.revision)


def find_model(settings: EngineSettings) -> ModelSource:
    """The source the settings name, found on disk or in the hub's cache (or on the hub)."""
    return locate_on_hub(resolve_source(settings))


def locate_on_hub(source: ModelSource) -> ModelSource:
    """A hub model: use the local cache when it has it, else check the hub answers at all.

    Loading from the cache makes restarts independent of the hub. The one quick request
    (no retries) turns "no network" into a one-line error in a second; otherwise every file
    transformers asks for is retried for half a minute.
    """
    if source.is_local:
        return source
    probe_file = source.gguf_file or "config.json"
    cached = huggingface_hub.try_to_load_from_cache(
        source.location, probe_file, revision=source.revision
    )
    if isinstance(cached, str):
        snapshot = Path(cached).parent  # .../snapshots/<commit>/config.json
        commit = snapshot.name if snapshot.parent.name == "snapshots" else None
        return replace(source, cached=True, commit=commit)
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise not_found(source, OSError("offline mode (HF_HUB_OFFLINE) and not cached"))
    try:
        huggingface_hub.HfApi().model_info(source.location, revision=source.revision, timeout=10)
    except Exception as error:
        raise not_found(source, error) from error
    return source


def source_kwargs(source: ModelSource) -> dict[str, Any]:
    """from_pretrained arguments for this source (cache only, GGUF file, revision)."""
    kwargs: dict[str, Any] = {}
    if source.cached:
        kwargs["local_files_only"] = True
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
    if source.revision:
        kwargs["revision"] = source.revision
    return kwargs


def not_found(source: ModelSource, error: Exception) -> ModelNotFound:
    """The one-line error for a hub model that is neither cached nor downloadable."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ModelNotFound(
        f"model '{source.location}' is not in the local Hugging Face cache and could not be "
        f"downloaded ({reason[:160]}); {offline_hint()}; or {HOW_TO_POINT_LOCALLY}"
    )
