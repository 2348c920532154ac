"""Logging set-up for rule scripts: everything goes to the rule's log file."""

from __future__ import annotations

import logging
import sys

LOGGER = "circuitry"


def _log_uncaught(exc_type, exc, traceback) -> None:
    """The error that ends a job goes into its log, not only to the terminal."""
    logging.getLogger(LOGGER).critical(
        "%s: %s", exc_type.__name__, exc, exc_info=(exc_type, exc, traceback)
    )


def setup_logging(log_path: str | None = None, level: int = logging.INFO) -> logging.Logger:
    """Send the `circuitry` loggers, warnings and a fatal error to `log_path` and stderr."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        handlers.append(logging.FileHandler(log_path, mode="w", encoding="utf-8"))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    return logging.getLogger(LOGGER)
