"""Log set-up: ``--log.level`` and ``--log.format logfmt|json``, like Go exporters."""

from __future__ import annotations

import logging
import sys
import time
from typing import Dict, Optional, TextIO

from .defaults import LOG_FORMATS, LOG_LEVELS

#: LEVELS, FORMATS: the choices of --log.level and --log.format (kept in .defaults).
LEVELS = LOG_LEVELS
FORMATS = LOG_FORMATS


def _timestamp(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return "%s.%03dZ" % (seconds, record.msecs)


def _fields(record: logging.LogRecord) -> Dict[str, str]:
    fields = {
        "ts": _timestamp(record),
        "level": "warn" if record.levelname == "WARNING" else record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    if record.exc_info:
        fields["err"] = logging.Formatter().formatException(record.exc_info)
    return fields


def _logfmt_value(value: str) -> str:
    if value and not any(ch in value for ch in ' ="\\\n\t'):
        return value
    return '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join("%s=%s" % (k, _logfmt_value(v)) for k, v in _fields(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        import json  # only for --log.format json: a one-shot command starts faster

        return json.dumps(_fields(record), ensure_ascii=False)


def setup_logging(level: str = "info", fmt: str = "logfmt",
                  stream: Optional[TextIO] = None) -> None:
    if level not in LEVELS:
        raise ValueError("log level %r: choose from %s" % (level, ", ".join(LEVELS)))
    if fmt not in FORMATS:
        raise ValueError("log format %r: choose from %s" % (fmt, ", ".join(FORMATS)))
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel({"warn": logging.WARNING}.get(level, getattr(logging, level.upper())))
