"""One reader for JSON Lines files: line numbers, blank lines skipped, bad lines reported rather than raised; and
the one reader of a run's ``metrics.jsonl`` on top of it.

Callers decide what a bad line means (raise their own error, skip it, warn), so the reader never raises for
a line's content; it only names what is wrong with it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

METRICS_FILE = "metrics.jsonl"  # written by sapo_vl.tracking.Tracker


class NotAJsonObject(ValueError):
    """A line that is valid JSON but not an object (e.g. a list or a number)."""

    def __init__(self, value: object):
        self.type_name = type(value).__name__
        super().__init__(f"expected a JSON object, got {self.type_name}")


def iter_json_objects(
    path: str | os.PathLike,
) -> Iterator[tuple[int, dict | None, json.JSONDecodeError | NotAJsonObject | None]]:
    """Yield ``(line number from 1, object or None, error or None)`` for each non-blank line of a UTF-8 file.

    Exactly one of object and error is None. The error is the ``json.JSONDecodeError`` of a line that is not
    valid JSON (or not UTF-8, or nested too deeply for the parser), or a ``NotAJsonObject`` for valid JSON that
    is not an object.
    """
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                value = json.loads(line)
            except UnicodeDecodeError as exc:
                yield lineno, None, json.JSONDecodeError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", "", 0)
                continue
            except RecursionError:
                yield lineno, None, json.JSONDecodeError("nested too deeply to parse", "", 0)
                continue
            except json.JSONDecodeError as exc:
                yield lineno, None, exc
                continue
            if isinstance(value, dict):
                yield lineno, value, None
            else:
                yield lineno, None, NotAJsonObject(value)


def read_metrics(path: str | os.PathLike) -> Iterator[tuple[int, dict | None, str | None]]:
    """The one reader of ``metrics.jsonl``: ``(line number, record, None)`` for each line holding an object with
    an integer ``step``, ``(line number, None, what is wrong)`` for any other non-blank line."""
    for lineno, record, error in iter_json_objects(path):
        if isinstance(error, json.JSONDecodeError):
            yield lineno, None, "not valid JSON"
        elif record is None or isinstance(record.get("step"), bool) or not isinstance(record.get("step"), int):
            yield lineno, None, "not a JSON object with an integer 'step'"
        else:
            yield lineno, record, None
