"""Logging for the worker and the command line.

Failures the project raises on purpose (bad input, an open breaker, a failed test command) are
reported to the user by the job; in the worker's log they get one line, not a traceback.
"""

from __future__ import annotations

import logging
from pathlib import Path

from temporalio.exceptions import ApplicationError

from agentparallels.core import redact
from agentparallels.core.errors import NON_RETRYABLE_TYPES


class ExpectedFailures(logging.Filter):
    """Drop the traceback of a log record about one of the project's own error types."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ApplicationError) and exc.type in NON_RETRYABLE_TYPES:
            record.msg = f"{record.msg}: {exc.type}: {exc.message.splitlines()[0]}"
            record.exc_info = None
            record.exc_text = None
        return True


class Redacting(logging.Formatter):
    """Every line written, tracebacks included, with credentials in URLs replaced by ``***``
    (a git error quoting a remote, an SDK error quoting an endpoint)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact.text(super().format(record))


def configure(log_file: Path | None = None, level: int = logging.INFO) -> None:
    """Log to stderr, or to ``log_file`` (for commands whose terminal shows progress)."""
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler()
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
    handler.setFormatter(Redacting("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(ExpectedFailures())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


__all__ = ["ExpectedFailures", "Redacting", "configure"]
