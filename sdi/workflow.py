"""Glue for the thin scripts in workflow_scripts/: logging to the rule's log file."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path


class _Tee:
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for s in self.streams:
            s.write(text)
            s.flush()
        return len(text)

    def flush(self):
        for s in self.streams:
            s.flush()

    def isatty(self):
        return False


@contextlib.contextmanager
def logged(log_path: str | Path):
    """Send logging records, warnings and stderr (tqdm progress) to log_path and the console."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", buffering=1) as log_file:
        tee = _Tee(sys.__stderr__, log_file)
        handler = logging.StreamHandler(tee)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)
        old_stderr, sys.stderr = sys.stderr, tee
        try:
            yield logging.getLogger("sdi")
        except BaseException:
            logging.getLogger("sdi").exception("failed")
            raise
        finally:
            sys.stderr = old_stderr
            root.removeHandler(handler)
