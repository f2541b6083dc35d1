"""Native: our own decoder for Llama-family models, and the C kernels under it.

Owns the decoder's forward pass (model, fused decode step, parts, architecture), its
linear layers (dense, torch's int8, our packed 8/4-bit), its KV cache, the CPU's feature
flags, and the kernel builder that compiles kernels/*.c for this machine.
May import: engine.text and the engine's vocabulary (engine.config, engine.errors,
engine.events) only; never engine.loading, engine.serving or engine.engine.
"""
