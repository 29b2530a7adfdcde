"""How Tollway's log lines look: text (the default) or one JSON object per line.

``log_format = "json"`` gives every record as ``{"ts", "level", "logger", "message", ...}``
plus the fields the code attached (``extra=``): the access log (``tollway.access``) and the
upstream failure lines (``tollway.upstream``) carry request id, key prefix, account, model,
provider, status, latency and credits as fields of their own, so a log pipeline needs no
parsing. Formatting happens only for records that pass the level (the logging module checks
the level before a record is even made), and the access log is not called at all when
``access_log`` is off.

No secret is ever passed to a logger; as a second line of defence both formats mask anything
shaped like a ``prx-`` key or a ``bt-`` token (kept: the prefix an operator recognises).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import msgspec

__all__ = ["JsonFormatter", "TextFormatter", "formatters"]

_SECRET = re.compile(r"\b(prx-|bt-)([0-9a-f]{4})[0-9a-f]{8,}")
# What every LogRecord has: anything else on a record was attached by the caller (``extra=``).
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
_encoder = msgspec.json.Encoder(enc_hook=str)  # a field of an odd type is logged as its str()


def mask(text: str) -> str:
    return _SECRET.sub(r"\1\2…", text) if ("prx-" in text or "bt-" in text) else text


class TextFormatter(logging.Formatter):
    """The default line format, with the secret mask."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s - %(asctime)s - %(name)s - %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: timestamp, level, logger, message, the caller's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in line:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return mask(_encoder.encode(line).decode())

    def formatException(self, ei: Any) -> str:
        return mask(super().formatException(ei))


def formatters(log_format: str) -> dict[str, dict[str, Any]]:
    """Litestar's ``LoggingConfig.formatters`` for ``log_format`` (its handlers use "standard")."""
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    return {"standard": {"()": formatter}}
