"""Console output for stages: progress bars, warnings and the stage summary, not datatrove's banners.

datatrove logs every task at INFO to the console (pipeline listing, per-task stats). Those lines stay
in each task's log file (`OUT/<stage>/logs/<pipeline>/logs/task_NNNNN.log`); the console shows
warnings and errors only. Set MEDBABEL_VERBOSE=1 to get datatrove's console output back.
"""

from __future__ import annotations

import os
import sys

from loguru import logger

from pipeline import compat

CONSOLE_LEVEL = "INFO" if os.environ.get("MEDBABEL_VERBOSE") else "WARNING"


def _for_console(record: dict) -> bool:
    """Everything but datatrove's warning that a task has no file of a folder: expected whenever a
    stage runs more tasks than a folder has files (the task logs keep it)."""
    return not record["message"].startswith("No files found on ")


def _console_logger() -> None:
    logger.remove()
    logger.add(
        sys.stderr,
        level=CONSOLE_LEVEL,
        colorize=compat.datatrove_colorize_logs(),
        filter=_for_console,
    )


def _task_logger(logging_dir, rank: int, local_rank: int = 0, node_rank: int = -1):
    """datatrove's task logger with the console sink at CONSOLE_LEVEL; the file keeps everything."""
    logger.remove()
    logfile = logging_dir.open(f"logs/task_{rank:05d}.log", "w")
    prefix = f"[NODE {node_rank}] " if node_rank != -1 else ""
    fmt = f"{prefix}{{time:YYYY-MM-DD HH:mm:ss.SSS}} | {{level: <8}} | {{name}}:{{function}}:{{line}} - {{message}}"
    logger.add(
        sys.stderr, level=CONSOLE_LEVEL if local_rank == 0 else "ERROR", format=fmt, filter=_for_console
    )
    logger.add(logfile, level="DEBUG", format=fmt, colorize=False)
    logger.info(f"Launching pipeline for {rank=}")
    return logfile


def install() -> None:
    """Route datatrove's logging as above, in this process (called on import of pipeline.record_io,
    which every stage pipeline unpickles, so worker processes get it too)."""
    compat.route_datatrove_logging(_console_logger, _task_logger)
    _console_logger()
