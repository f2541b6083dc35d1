"""The model's own files besides its weights: the tokenizer, the config and the generation
config (a GGUF file carries all three in its metadata), read by transformers.

transformers is imported inside each function: a start that reads a kept plain tokenizer
(engine.loading.plain_entry) never calls them, and importing it costs ~0.6 s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.errors import ModelLoadFailed
from engine.loading.model_source import ModelSource, not_found, source_kwargs

if TYPE_CHECKING:
    from transformers import GenerationConfig
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase


def load_tokenizer(source: ModelSource) -> PreTrainedTokenizerBase:
    """Load the tokenizer that belongs to the model (GGUF files carry their own)."""
    from transformers import AutoTokenizer  # noqa: PLC0415  (see above)

    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location, **source_kwargs(source))
    except OSError as error:
        if source.is_local:
            message = f"cannot read the tokenizer of {source.location}: {error}"
            raise ModelLoadFailed(message) from error
        raise not_found(source, error) from error
    except (ValueError, KeyError, RuntimeError) as error:
        raise ModelLoadFailed(f"cannot load the tokenizer of {source.location}: {error}") from error
    return tokenizer


def load_config(source: ModelSource) -> Any:
    """The transformers config (GGUF files carry theirs in their metadata)."""
    from transformers import AutoConfig  # noqa: PLC0415  (see above)

    try:
        return AutoConfig.from_pretrained(source.location, **source_kwargs(source))
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadFailed(f"cannot read the config of {source.location}: {error}") from error


def load_generation_config(source: ModelSource, config: Any) -> GenerationConfig:
    """generation_config.json when the model has one, else what its config implies."""
    from transformers import GenerationConfig  # noqa: PLC0415  (see above)

    try:
        return GenerationConfig.from_pretrained(source.location, **source_kwargs(source))
    except (OSError, ValueError):
        return GenerationConfig.from_model_config(config)
