"""The async face of the engine: admission, cache, single-flight, and a stream of events."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

from engine.config import EffectiveConfig, EngineSettings
from engine.errors import EngineError, EngineNotReady, PromptTooLong
from engine.events import (
    ChatTurn,
    EngineEvent,
    Finished,
    GenerationRequest,
    ReplyStats,
    Started,
    TokenText,
)
from engine.loading.bootstrap import LoadedModel, bootstrap
from engine.loading.decode_loop import SamplingParams
from engine.loading.remote_model import RemoteModel, load_tokenizer_only
from engine.loading.stages import ProgressCallback, no_progress
from engine.serving.local_runner import LocalRunner
from engine.serving.prefix_cache import PrefixCache
from engine.serving.remote_runner import RemoteRunner
from engine.serving.response_cache import (
    CachedReply,
    ReplyCache,
    ResponseCache,
    as_cached,
    reply_key,
)
from engine.serving.stats import EngineStats, StatsSnapshot
from engine.serving.worker import Worker
from engine.serving.worker_limits import WorkerLimits
from engine.text.prompt import encode_prompt, prompt_opens_think, render_chat

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedPrompt:
    """A rendered, tokenised prompt ready for the worker."""

    text: str
    ids: tuple[int, ...]  # shared between callers through the render cache: never mutated
    starts_in_think: bool


class Engine:
    """Owns the worker thread and the response cache; safe to share between adapters."""

    def __init__(self, settings: EngineSettings, reply_cache: ReplyCache | None = None) -> None:
        """`reply_cache`: a shared store (several processes) instead of the disk one."""
        self.settings = settings
        self.stats = EngineStats()
        budget = settings.prefix_cache_mb * 1024 * 1024
        self._prefix_cache = PrefixCache(budget) if budget else None
        limits = WorkerLimits.from_settings(settings)
        self._worker = Worker(limits, self.stats, self._prefix_cache)
        self._bundle: LoadedModel | RemoteModel | None = None
        # Where replies come from: the worker here, or (backend remote) servers elsewhere.
        self._runner: LocalRunner | RemoteRunner = LocalRunner(self._worker)
        self._cache: ReplyCache | None = reply_cache if settings.cache_enabled else None
        self._inflight: dict[str, asyncio.Future[Finished | None]] = {}
        # The chat service counts a conversation's tokens while trimming its history, then
        # asks for that same conversation: remember recent renders so the event loop does
        # the template and the tokenizer once per message, not twice.
        self._render = functools.lru_cache(maxsize=64)(self._render_uncached)

    async def start(self, progress: ProgressCallback = no_progress) -> EffectiveConfig:
        """Load the model on the worker thread; the event loop stays free meanwhile."""
        if self.settings.cache_enabled and self._cache is None:
            self._cache = await asyncio.to_thread(
                ResponseCache, self.settings.cache_dir, self.settings.cache_size_mb * 1024 * 1024
            )
        if self.settings.backend == "remote":
            self._bundle = await asyncio.to_thread(load_tokenizer_only, self.settings, progress)
            remote = RemoteRunner(self.settings)
            await remote.start()
            self._runner = remote
        else:
            ready = self._worker.start(lambda: bootstrap(self.settings, progress))
            self._bundle = await asyncio.wrap_future(ready)
        self.stats.config = self._bundle.effective()
        log.info("engine ready: %s", self.stats.config.summary())
        return self.stats.config

    @property
    def ready(self) -> bool:
        """True once the model is loaded."""
        return self._bundle is not None

    @property
    def loaded(self) -> LoadedModel:
        """The loaded model bundle (raises before start); for benchmarks and diagnostics."""
        bundle = self._require_bundle()
        if isinstance(bundle, RemoteModel):
            raise EngineNotReady("the model runs on the remote servers, not here")
        return bundle

    @property
    def busy(self) -> bool:
        """True while a reply is being generated or waits in the queue."""
        return self._runner.busy

    @property
    def effective(self) -> EffectiveConfig:
        """The configuration in effect (raises before start)."""
        return self._require_bundle().effective()

    def snapshot(self) -> StatsSnapshot:
        """Aggregate counters for /stats."""
        if self._prefix_cache is not None:
            self.stats.set_prefix_usage(self._prefix_cache.usage())
        return dataclasses.replace(self.stats.snapshot(), servers=self._runner.statuses())

    def forget(self, conversation: str) -> None:
        """Drop what the engine keeps of a conversation (its history was reset)."""
        self._worker.forget(conversation)

    def prepare(self, messages: Sequence[ChatTurn]) -> PreparedPrompt:
        """Render and tokenise a conversation with the model's chat template."""
        self._require_bundle()
        return self._render(tuple(messages))

    def _render_uncached(self, messages: tuple[ChatTurn, ...]) -> PreparedPrompt:
        bundle = self._require_bundle()
        text = render_chat(bundle.tokenizer, messages, self.settings.enable_thinking)
        ids = tuple(encode_prompt(bundle.tokenizer, text))
        return PreparedPrompt(text, ids, prompt_opens_think(text))

    def count_tokens(self, messages: Sequence[ChatTurn]) -> int:
        """Prompt tokens this conversation would cost, template included."""
        return len(self.prepare(messages).ids)

    def count_text_tokens(self, text: str) -> int:
        """Tokens of a bare piece of text (for input limits)."""
        ids = self._require_bundle().tokenizer(text, add_special_tokens=False)["input_ids"]
        return len(ids)

    def prompt_limit(self, max_new_tokens: int | None = None) -> int:
        """Longest prompt accepted: the setting, and room for the reply in the context window."""
        bundle = self._require_bundle()
        context = int(getattr(bundle.config, "max_position_embeddings", 0) or 0)
        new_tokens = max_new_tokens or self.settings.max_new_tokens
        limit = self.settings.max_input_tokens
        return min(limit, context - new_tokens) if context else limit

    def sampling(self, request: GenerationRequest) -> SamplingParams:
        """Request parameters over engine defaults."""
        s = self.settings
        return SamplingParams(
            max_new_tokens=request.max_new_tokens or s.max_new_tokens,
            temperature=s.temperature if request.temperature is None else request.temperature,
            top_p=s.top_p if request.top_p is None else request.top_p,
            seed=s.seed if request.seed is None else request.seed,
            ignore_stop=request.ignore_stop,
            stop=request.stop,
        )

    async def generate(self, request: GenerationRequest) -> Finished:
        """The whole reply at once."""
        async with contextlib.aclosing(self.stream(request)) as events:
            async for event in events:
                if isinstance(event, Finished):
                    return event
        raise EngineNotReady("the stream ended without a reply")

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[EngineEvent, None]:
        """Queued?, Started, TokenText..., Finished; typed EngineErrors are raised."""
        submitted = time.perf_counter()
        try:
            params = self.sampling(request)
            prompt = self.prepare(request.messages)
            limit = self.prompt_limit(params.max_new_tokens)
            if len(prompt.ids) > limit:
                raise PromptTooLong(len(prompt.ids), limit)
        except EngineError as error:
            self.stats.record_error(error.kind)
            raise
        bundle = self._require_bundle()
        # A deterministic reply has an identity: cached and shared; any other never is.
        thinking = self.settings.enable_thinking
        key = reply_key(bundle, thinking, prompt.text, params) if params.deterministic else None
        while True:
            if key is not None:
                cached = await self._cache_get(key)
                if cached is not None:
                    async for event in self._replay(cached, submitted):
                        yield event
                    return
                leader = self._inflight.get(key)
                if leader is not None:
                    # Two identical requests at once: wait for the first one's reply.
                    shared = await asyncio.shield(leader)
                    if shared is None:
                        continue  # the first one failed or was cancelled: run it ourselves
                    async for event in self._replay(as_cached(shared), submitted):
                        yield event
                    return
            # aclosing: when our consumer stops, the job is withdrawn now, not when collected.
            run = self._run(prompt, params, key, request)
            async with contextlib.aclosing(run) as events:
                async for event in events:
                    yield event
            return

    async def close(self) -> None:
        """Cancel queued and running replies, stop the worker, close the cache."""
        await self._runner.close()
        if self._cache is not None:
            self._cache.close()
        self._bundle = None

    def _require_bundle(self) -> LoadedModel | RemoteModel:
        if self._bundle is None:
            raise EngineNotReady("the model is not loaded")
        return self._bundle

    async def _cache_get(self, key: str) -> CachedReply | None:
        if self._cache is None or not self._cache.available:
            return None
        return await asyncio.to_thread(self._cache.get, key)

    async def _replay(
        self, cached: CachedReply, submitted: float
    ) -> AsyncGenerator[EngineEvent, None]:
        yield Started(prompt_tokens=cached.prompt_tokens)
        yield TokenText(cached.text)
        elapsed = time.perf_counter() - submitted
        stats = ReplyStats(
            prompt_tokens=cached.prompt_tokens,
            generated_tokens=cached.generated_tokens,
            ttft_s=elapsed,
            decode_tps=0.0,
            total_s=elapsed,
            queue_wait_s=0.0,
            cache_hit=True,
        )
        self.stats.record_reply(stats)
        yield Finished(cached.text, stats, cached.finish_reason)  # stats.cache_hit says cached

    async def _run(
        self,
        prompt: PreparedPrompt,
        params: SamplingParams,
        key: str | None,
        request: GenerationRequest,
    ) -> AsyncGenerator[EngineEvent, None]:
        loop = asyncio.get_running_loop()
        shared: asyncio.Future[Finished | None] | None = None
        if key is not None:
            shared = loop.create_future()
            self._inflight[key] = shared
        source = self._runner.events(prompt.ids, prompt.starts_in_think, params, request)
        result: Finished | None = None
        try:
            # aclosing: when our consumer stops, the reply is withdrawn now, not when collected.
            async with contextlib.aclosing(source) as events:
                async for event in events:
                    if isinstance(event, Finished):
                        result = event
                        self.stats.record_reply(event.stats)
                        if key is not None and event.finish_reason in ("stop", "length"):
                            await asyncio.to_thread(self._store, key, event)
                    yield event
        except EngineError as error:
            self.stats.record_error(error.kind)
            raise
        except (asyncio.CancelledError, GeneratorExit):
            if result is None:
                self.stats.record_error("cancelled")  # the user left or stopped the reply
            raise
        finally:
            if shared is not None and key is not None:
                self._inflight.pop(key, None)
                if not shared.done():
                    finished_ok = result is not None and result.finish_reason != "cancelled"
                    shared.set_result(result if finished_ok else None)

    def _store(self, key: str, finished: Finished) -> None:
        if self._cache is not None and self._cache.available:
            self._cache.put(key, as_cached(finished))
