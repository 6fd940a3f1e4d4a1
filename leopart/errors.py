"""User-facing errors.

Every problem a user can cause (bad paths, corrupt files, impossible config values) is raised as
:class:`LeopartError` with a one-line message that names the offending file or config key. The
stage runner (:mod:`leopart.stages.runner`) prints that line and exits non-zero instead of showing
a traceback.
"""

from __future__ import annotations


class LeopartError(Exception):
    """An error caused by the user's input or configuration; its message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
