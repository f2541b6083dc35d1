"""The embedded language model, behind one face: the names bot/ uses, and nothing else.

    engine.engine  Engine: admission, reply cache, single-flight, a stream of events
    engine.config  settings asked for, and the configuration in effect
    engine.events  requests in, events out;  engine.errors: typed errors with stable labels
    serving/  the worker thread and what it keeps     text/    prompts in, words out
    loading/  bootstrap's stages, both backends        native/  our decoder and C kernels

Inside, imports point one way, engine.engine -> serving -> loading -> native, and text/ and
the vocabulary modules (config, events, errors) are usable by all (tests/test_import_rules.py
checks it). Names load on first use (PEP 562), so `from engine import EngineSettings` stays
light and only `Engine` brings in torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.config import EngineSettings as EngineSettings
    from engine.config import default_data_dir as default_data_dir
    from engine.engine import Engine as Engine
    from engine.errors import EngineError as EngineError
    from engine.errors import PromptTooLong as PromptTooLong
    from engine.events import ChatTurn as ChatTurn
    from engine.events import Finished as Finished
    from engine.events import GenerationRequest as GenerationRequest
    from engine.events import Queued as Queued
    from engine.events import ReplyStats as ReplyStats
    from engine.events import Started as Started
    from engine.events import TokenText as TokenText
    from engine.loading.library_logs import quiet_libraries as quiet_libraries
    from engine.loading.model_names import configured_model as configured_model
    from engine.loading.model_names import local_models as local_models
    from engine.loading.stages import ProgressCallback as ProgressCallback
    from engine.serving.json_store import STORE_ERRORS as STORE_ERRORS
    from engine.serving.json_store import dumps as dumps
    from engine.serving.json_store import open_json_store as open_json_store
    from engine.serving.json_store import read_row as read_row
    from engine.serving.response_cache import CachedReply as CachedReply
    from engine.serving.response_cache import ReplyCache as ReplyCache
    from engine.serving.response_cache import cached_reply as cached_reply
    from engine.serving.response_cache import reply_json as reply_json
    from engine.serving.stats import ServerStatus as ServerStatus
    from engine.serving.stats import StatsSnapshot as StatsSnapshot
    from engine.serving.store_repair import open_or_repair as open_or_repair
    from engine.serving.store_repair import require_intact as require_intact

# Each public name and the module it lives in.
_HOMES = {
    "CachedReply": "engine.serving.response_cache",
    "ChatTurn": "engine.events",
    "Engine": "engine.engine",
    "EngineError": "engine.errors",
    "EngineSettings": "engine.config",
    "Finished": "engine.events",
    "GenerationRequest": "engine.events",
    "ProgressCallback": "engine.loading.stages",
    "PromptTooLong": "engine.errors",
    "Queued": "engine.events",
    "ReplyCache": "engine.serving.response_cache",
    "ReplyStats": "engine.events",
    "STORE_ERRORS": "engine.serving.json_store",
    "Started": "engine.events",
    "ServerStatus": "engine.serving.stats",
    "StatsSnapshot": "engine.serving.stats",
    "TokenText": "engine.events",
    "cached_reply": "engine.serving.response_cache",
    "default_data_dir": "engine.config",
    "dumps": "engine.serving.json_store",
    "open_json_store": "engine.serving.json_store",
    "open_or_repair": "engine.serving.store_repair",
    "read_row": "engine.serving.json_store",
    "reply_json": "engine.serving.response_cache",
    "require_intact": "engine.serving.store_repair",
    "quiet_libraries": "engine.loading.library_logs",
    "configured_model": "engine.loading.model_names",
    "local_models": "engine.loading.model_names",
}
__all__ = [
    "STORE_ERRORS",
    "CachedReply",
    "ChatTurn",
    "Engine",
    "EngineError",
    "EngineSettings",
    "Finished",
    "GenerationRequest",
    "ProgressCallback",
    "PromptTooLong",
    "Queued",
    "ReplyCache",
    "ReplyStats",
    "ServerStatus",
    "Started",
    "StatsSnapshot",
    "TokenText",
    "cached_reply",
    "configured_model",
    "default_data_dir",
    "dumps",
    "local_models",
    "open_json_store",
    "open_or_repair",
    "quiet_libraries",
    "read_row",
    "reply_json",
    "require_intact",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module the first time the name is asked for."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value
