"""Progress bars that fall back to plain log lines when output is not a terminal."""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("mitigate.progress")


def progress_bar(iterable, *, desc: str, enabled: bool = True, total: int | None = None):
    """Wrap ``iterable`` in a tqdm bar on a terminal, or log start and end otherwise.

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
    total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
    logger.info("%s: started (%s steps)", desc, total if total is not None else "unknown")
    count = 0
    for count, item in enumerate(iterable, start=1):
        yield item
    logger.info("%s: done (%d steps)", desc, count)
