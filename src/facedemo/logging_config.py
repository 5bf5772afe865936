"""Logging for `facedemo serve`: uvicorn's configuration plus JSON access lines.

`build_log_config(settings)` is a `logging.config.dictConfig` document: uvicorn's own loggers as
uvicorn sets them up, the `facedemo` loggers on the same handler, and the `facedemo.access`
logger writing one JSON object per line to stdout through `JsonFormatter`, all at
settings.log_level. uvicorn's own access log is switched off by the caller: our line replaces it.
"""

from __future__ import annotations

import copy
import json
import logging
from datetime import datetime, timezone
from typing import Any

from facedemo.config import Settings

ACCESS_LOGGER = "facedemo.access"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        """Serialise `record`; `extra={"fields": {...}}` members become top-level keys."""
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            document.update(fields)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


def build_log_config(settings: Settings) -> dict[str, Any]:
    """The dictConfig for the server process (and each worker) at `settings.log_level`."""
    import uvicorn.config

    level = settings.log_level.upper()
    config: dict[str, Any] = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["formatters"]["json"] = {"()": f"{__name__}.JsonFormatter"}
    config["handlers"]["json"] = {
        "formatter": "json",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stdout",
    }
    config["loggers"]["facedemo"] = {"handlers": ["default"], "level": level, "propagate": False}
    config["loggers"][ACCESS_LOGGER] = {"handlers": ["json"], "level": level, "propagate": False}
    # python-multipart's warnings about malformed bodies quote bytes of the upload.
    config["loggers"]["python_multipart"] = {"level": "ERROR"}
    return config
