"""Where the model comes from: a hub id, a local folder, or a local .gguf file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.config import EngineSettings
from engine.errors import ModelNotFound

HOW_TO_POINT_LOCALLY = (
    "set ENGINE__MODEL to a local model folder (with config.json) or a .gguf file, "
    "e.g. ENGINE__MODEL=/models/Qwen3-0.6B or ENGINE__MODEL=/models/qwen3-0.6b-q8_0.gguf"
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
    """Turn the model setting into a source, failing early when a local path is missing."""
    raw = settings.model.strip()
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
