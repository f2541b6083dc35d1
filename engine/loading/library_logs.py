"""Third-party libraries' own logging, quietened for a terminal.

Its own module: the transformers backend it came from imports transformers' model classes
(~1 s), which a start on the native decoder never needs.
"""

from __future__ import annotations

import huggingface_hub
from transformers.utils import logging as hf_logging


def quiet_libraries() -> None:
    """For a terminal: no per-file progress bars, and only transformers' errors.

    Its warnings are written for library users (one even claims GGUF weights stay packed
    when they are de-quantised); what matters to a bot operator we log ourselves.
    """
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    huggingface_hub.utils.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
