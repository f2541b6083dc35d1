"""The embedded language model: loading, CPU tuning, a worker thread, caching and stats."""
