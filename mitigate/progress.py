"""Progress bars that fall back to plain log lines when output is not a terminal."""

from __future__ import annotations

import logging
import sys
import time

logger = logging.getLogger("mitigate.progress")

# Without a terminal, a long stage logs one interim line at most this often.
LOG_INTERVAL_SECONDS = 30.0


def progress_bar(iterable, *, desc: str, enabled: bool = True, total: int | None = None):
    """Wrap ``iterable`` in a tqdm bar on a terminal, or log its start, progress and end otherwise.

    Bars are shown only on the main process under Accelerate: callers pass
    ``enabled=accelerator.is_main_process``.
    """
    if not enabled:
        return iterable
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, leave=False)
    return _logged(iterable, desc, total)


def _logged(iterable, desc, total):
    """Yield from ``iterable`` and log its start, its end, and the step reached.

    The step reached is logged at most once every ``LOG_INTERVAL_SECONDS``.
    """
    interval = LOG_INTERVAL_SECONDS
    total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
    logger.info("%s: started (%s steps)", desc, total if total is not None else "unknown")
    started = last_line = time.monotonic()
    count = 0
    for count, item in enumerate(iterable, start=1):
        yield item
        now = time.monotonic()
        if now - last_line >= interval:
            last_line = now
            logger.info("%s: step %d of %s, %.0f s elapsed", desc, count,
                        total if total is not None else "unknown", now - started)
    logger.info("%s: done (%d steps in %.1f s)", desc, count, time.monotonic() - started)
