"""A server the extension cannot start on stops, with one sentence.

By the time the extension loads, it has already made the server's kernel manager, kernel spec
manager and session manager its own (app.py, at link time). jupyter_server logs an extension
that fails to load and serves on without it: a server half ours, whose kernels' every start
then fails with an error that says nothing of the cause. An administrator's malformed option
(``--GPUInventory.static_gpus=…``) is the usual cause, so the server stops instead, naming the
option and what is wrong with it.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator

from traitlets import TraitError

from ..base.errors import ContainerKernelError

# traitlets' own words for a value of the wrong kind: "The 'static_gpus' trait of a
# GPUInventory instance expected a list, not the int 1."
_TRAITLETS_ERROR = re.compile(r"^The '(\w+)' trait of an? (\w+) instance (.*)$", re.DOTALL)

STOPS = "The server stops rather than serve without jupyter_gpu_containers."


def sentence_for(error: BaseException) -> str:
    """What to tell the administrator of an extension that could not load."""
    if isinstance(error, TraitError):
        message = str(error).strip()
        found = _TRAITLETS_ERROR.match(message)
        if found:
            name, owner, what = found.groups()
            what = what.rstrip(".")
            return (
                f"The option {owner}.{name} is not valid: it {what}. Correct it where it is set "
                f"(the command line or a Jupyter config file). {STOPS}"
            )
        # This project's own checks name their option in a sentence already.
        return f"{message} {STOPS}"
    # The administrator reads this: a refusal names the option that decided it.
    said = error.log_text if isinstance(error, ContainerKernelError) else str(error)
    return (
        f"jupyter_gpu_containers could not start ({type(error).__name__}: {said}). {STOPS} "
        "The server's log above has the details."
    )


@contextlib.contextmanager
def stopping_on_failure(
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> Iterator[None]:
    """Run a step of the extension's load: on any failure, log the sentence and stop the
    server (SystemExit, which jupyter_server's extension loader does not catch)."""
    try:
        yield
    except Exception as e:
        log.critical("%s", sentence_for(e), exc_info=not isinstance(e, TraitError))
        raise SystemExit(1) from e
