"""Typed engine errors, each with a stable label that metrics and user messages switch on."""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error the engine reports to its callers."""

    kind = "internal"


class Overloaded(EngineError):
    """The work ahead would keep this request waiting too long; refused at once."""

    kind = "overloaded"

    def __init__(self, queued: int, wait_s: float | None = None) -> None:
        why = f"about {wait_s:.0f} s of work ahead" if wait_s is not None else "queue full"
        super().__init__(f"the engine is overloaded ({queued} requests waiting, {why})")
        self.queued = queued
        self.wait_s = wait_s


class TooManyQueued(EngineError):
    """This user already has as many requests waiting as one user may."""

    kind = "too_many_queued"

    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} requests of this user are already waiting")
        self.limit = limit


class PromptTooLong(EngineError):
    """The rendered prompt does not fit the model's context or the configured input limit."""

    kind = "too_long"

    def __init__(self, tokens: int, limit: int) -> None:
        super().__init__(f"prompt is {tokens} tokens, the limit is {limit}")
        self.tokens = tokens
        self.limit = limit


class GenerationFailed(EngineError):
    """Generation raised inside the worker; only this request failed."""

    kind = "generation_failed"


class EngineNotReady(EngineError):
    """The model is not loaded (yet, or any more)."""

    kind = "not_ready"


class ModelNotFound(EngineError):
    """The configured model could not be found locally or downloaded."""

    kind = "model_not_found"


class ModelLoadFailed(EngineError):
    """The model was found but could not be loaded."""

    kind = "model_load_failed"


class RemoteUnavailable(EngineError):
    """No inference server answered (backend remote): all down, or all failed this reply."""

    kind = "remote_unavailable"


class RemoteRejected(EngineError):
    """An inference server refused the request itself (backend remote): a parameter it
    does not take, a body it cannot read. No other server would take it either; a wrong
    key or URL is the server's failure instead (it is left for the others)."""

    kind = "remote_rejected"
