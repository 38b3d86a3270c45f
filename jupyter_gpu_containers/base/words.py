"""Counts in the user's words: "1 GPU", "2 GPUs", never "1 GPU(s)".

Sentences that name how many of something there are take their noun from here, so that no
message says "1 start(s)" or "your other kernels hold 0" in a way a student has to decode.
"""

from __future__ import annotations


def counted(n: int, singular: str, plural: str = "") -> str:
    """``n`` and its noun, in the singular for one and the plural otherwise (``plural`` when
    given, else the singular with an "s")."""
    return f"{n} {singular if n == 1 else plural or singular + 's'}"
