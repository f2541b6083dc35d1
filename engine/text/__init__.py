"""Text: what goes into the model as a prompt and what comes out as words.

Owns the chat template rendering and stop tokens, the think-block filter and the
incremental detokenizer. Usable by every other part of the engine.
May import: the engine's vocabulary (engine.config, engine.errors, engine.events) only.
"""
