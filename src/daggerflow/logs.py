"""Logging set-up for the command line (``daggerflow worker``, ``daggerflow demo``).

``configure_logging`` sets the root logger: ``text`` is one readable line per record,
``json`` one JSON object per line with ``ts`` (ISO-8601, UTC), ``level``, ``logger``,
``message``, the structured fields a record carries (``extra=``: ``event``,
``instance_id``, ``template``, ``task``, ``error``...) and ``exception`` (the formatted
traceback, a string). uvicorn's loggers propagate to the root, so its access log (when
asked for) comes out in the same format.

A library embedding daggerflow configures logging itself: nothing here runs unless called,
and the web server then keeps uvicorn's own configuration (``uvicorn_options``).
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import msgspec

LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]
LOG_FORMATS = ["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
_encoder = msgspec.json.Encoder()


class _Settings:
    configured = False
    access_log = False


def _plain(value: Any) -> Any:
    """A value JSON can hold: scalars as they are, anything else as its string."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = _plain(value)
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, http_version, status = record.args
            entry.update(client=str(client), method=method, path=path, http_version=http_version, status=status)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return _encoder.encode(entry).decode()


def configure_logging(
    *, level: str = "INFO", fmt: str = "text", access_log: bool = False, stream: TextIO | None = None
) -> None:
    """Configure the root logger for a daggerflow process (replacing its handlers)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt.lower() == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    numeric = logging.getLevelName(level.upper())
    root.setLevel(numeric)
    if numeric > logging.DEBUG:
        # aiokafka reports every coordinator lookup and join at INFO: our own lines say what
        # matters (assignments, restores, activations).
        logging.getLogger("aiokafka").setLevel(logging.WARNING)
    # uvicorn's start-up lines are noise beside ours; errors still show.
    logging.getLogger("uvicorn.error").setLevel(max(numeric, logging.WARNING))
    access = logging.getLogger("uvicorn.access")
    access.setLevel(logging.INFO if access_log else logging.WARNING)
    access.propagate = True
    access.handlers = []
    _Settings.configured = True
    _Settings.access_log = access_log


def uvicorn_options() -> dict[str, Any]:
    """uvicorn.Config's logging options: after ``configure_logging``, uvicorn leaves the
    loggers alone (they propagate to the root's handler) and logs access only if asked;
    otherwise uvicorn's defaults, quiet (warnings only, no access log)."""
    if _Settings.configured:
        return {"log_config": None, "log_level": None, "access_log": _Settings.access_log}
    return {"log_level": "warning", "access_log": False}
