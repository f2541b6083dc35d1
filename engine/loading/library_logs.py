"""Third-party libraries' own logging, quietened for a terminal.

Its own module: the transformers backend it came from imports transformers' model classes
(~1 s), which a start on the native decoder never needs. transformers itself is not
imported here either (0.6 s): a start that reads a kept plain tokenizer never loads it.
"""

from __future__ import annotations

import os
import sys

import huggingface_hub
from huggingface_hub.utils.tqdm import disable_progress_bars


def quiet_libraries() -> None:
    """For a terminal: no per-file progress bars, and only transformers' errors.

    Its warnings are written for library users (one even claims GGUF weights stay packed
    when they are de-quantised); what matters to a bot operator we log ourselves.
    """
    # transformers takes both settings when it is imported (its progress bars follow the
    # hub's); once imported, it is told directly.
    disable_progress_bars()
    huggingface_hub.utils.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging  # noqa: PLC0415  (already loaded)

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
