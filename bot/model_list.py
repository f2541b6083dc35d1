"""`qwenbot models`: the models this machine can run without a download, and the one the
settings name."""

from __future__ import annotations

from typing import TextIO

from engine import configured_model, local_models


def human_size(size: int) -> str:
    """1,234,567 bytes -> "1.2 MB"."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def print_models(model: str, out: TextIO) -> int:
    """List the local models (name, where, size, path) and the configured one's status."""
    found = local_models()
    if found:
        print("Models on this machine (ENGINE__MODEL or --model takes the name):", file=out)
        width = max(len(entry.name) for entry in found)
        for entry in found:
            size = human_size(entry.size_bytes)
            print(f"  {entry.name:<{width}}  {entry.where:<9}  {size:>8}  {entry.path}", file=out)
    else:
        print("No models on this machine yet.", file=out)
    print(f"Configured: {configured_model(model)}", file=out)
    return 0
