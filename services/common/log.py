"""Logging for every carecoord process: structlog, JSON lines or console, request ids, no PHI.

Never log PHI: no patient names, MRNs, birth dates, note text, plan or task titles,
GraphQL query text or variables, headers or tokens. Log ids (patient_id, plan_id,
team_id, user_id, request_id) and let the audit log hold what was accessed.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog
from structlog.types import EventDict, Processor, WrappedLogger

# Keys that carry PHI or credentials when someone logs a record wholesale. A safety net,
# not a licence: the habit is still to log ids only.
_REDACTED_KEYS = frozenset(
    {
        "authorization",
        "birth_date",
        "detail",
        "description",
        "mrn",
        "name",
        "note",
        "password",
        "patient_name",
        "query",
        "text",
        "title",
        "token",
        "variables",
    }
)

# Libraries that log through stdlib logging and should look like the rest of our lines.
_LIBRARY_LOGGERS = ("uvicorn", "uvicorn.error", "aiokafka", "faust", "mode", "asyncpg")


def _redact_phi_keys(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    for key in _REDACTED_KEYS.intersection(event_dict):
        event_dict[key] = "[redacted]"
    return event_dict


def _drop_color_message(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # uvicorn passes an ANSI-coloured copy of its message as an extra; noise in JSON.
    event_dict.pop("color_message", None)
    return event_dict


def _orjson_dumps(obj: Any, **_: Any) -> str:
    # default=str: an odd value (UUID subclass, Path) must never make a log line vanish.
    return orjson.dumps(obj, default=str).decode()


def _parse_level(level: str) -> int:
    levels = logging.getLevelNamesMapping()
    name = level.strip().upper()
    if name not in levels:
        raise ValueError(f"unknown log level {level!r}; use debug, info, warning or error")
    return levels[name]


def _use_json(fmt: str) -> bool:
    if fmt == "json":
        return True
    if fmt == "console":
        return False
    if fmt == "auto":
        return not sys.stderr.isatty()
    raise ValueError(f"unknown log format {fmt!r}; use auto, json or console")


def configure_logging(level: str, fmt: str = "auto") -> None:
    """Send structlog and stdlib logging to stderr in one format, at one level.

    fmt: "json" (one JSON object per line), "console" (readable), or "auto" (JSON unless
    stderr is a terminal). Safe to call again; the last call wins.
    """
    numeric_level = _parse_level(level)
    as_json = _use_json(fmt)

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
        _drop_color_message,
        _redact_phi_keys,
    ]
    renderer: Processor
    if as_json:
        # Locals in tracebacks would carry whatever PHI a frame held.
        tracebacks = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
        shared.append(tracebacks)
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    else:
        renderer = structlog.dev.ConsoleRenderer(
            exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False)
        )

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric_level)

    for name in _LIBRARY_LOGGERS:
        lib = logging.getLogger(name)
        lib.handlers.clear()
        lib.propagate = True
        lib.setLevel(logging.NOTSET)
    # The API writes its own access line; uvicorn's would add the query string, and a
    # GET /graphql query string holds the query and its variables.
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    access.disabled = True


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger named after the module that uses it."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
