"""Serving: the worker thread that owns the model and everything it keeps while answering.

Owns the worker, the scheduler and the model runner (continuous batching), a request's
sequence and reply output, the stats counters, the prefix cache (conversation state kept
between turns), the reply cache and the JSON stores beneath it.
May import: engine.loading, engine.native, engine.text and the engine's vocabulary
(engine.config, engine.errors, engine.events); never engine.engine.
"""
