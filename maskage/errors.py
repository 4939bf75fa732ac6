"""maskage's own error types: what the ``maskage`` command reports as a one-line error and exit status 2.

Anything else that escapes a command is a bug and raises with its traceback.
"""
from __future__ import annotations


class MaskageError(Exception):
    """A problem with what maskage was given (a file, a setting, an argument), described for the user."""


class UsageError(MaskageError, ValueError):
    """A value maskage cannot use: a setting, an argument, a combination of them (a ``ValueError`` too)."""
