"""Errors that are the user's to fix, kept apart from bugs.

Every subcommand prints a ``UserError`` as one line and exits 2; any other exception is a bug and keeps its
traceback. A plug-in that wants the one-line treatment for bad options raises one of these (``DataError`` for a
dataset builder's options).
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user gave is wrong: a recipe key, a name, a path, a data row. The message says which."""


class ConfigError(UserError, ValueError):
    """A recipe key or value is wrong (names the dotted key)."""


class UnknownNameError(UserError, KeyError, ValueError):
    """A registry lookup of a name nothing registered (names the kind, the registered names, the closest)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class PluginError(UserError, ImportError):
    """A plug-in module named by ``imports:``, ``--import`` or an entry point cannot be imported."""


class DataError(UserError, ValueError):
    """A data source cannot be read as asked: a missing path, an unknown format, a bad dataset option."""


class Interrupted(Exception):
    """A stop (SIGTERM / SIGINT) was requested while a phase was running; it ended early and its work is void."""
