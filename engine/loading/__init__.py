"""Loading: bring a model up, top to bottom, in bootstrap.py's stages.

Owns where the model comes from (source, fingerprint), the machine's threads, device and
dtype, the tokenizer and configs, both backends' weights (the transformers path with its
quantisation and compile, the native path's checkpoint reading), the warm-up, and the
plain prefill/decode functions both the warm-up and the worker's runner step a model with.
May import: engine.native, engine.text and the engine's vocabulary (engine.config,
engine.errors, engine.events); never engine.serving or engine.engine.
"""
