"""Console output for stages: progress bars, warnings and the stage summary, not datatrove's banners.

datatrove logs every task at INFO to the console (pipeline listing, per-task stats). Those lines stay
in each task's log file (`OUT/<stage>/logs/<pipeline>/logs/task_NNNNN.log`); the console shows
datatrove's warnings and errors only. Set MEDBABEL_VERBOSE=1 to get datatrove's console output back.
medbabel's own code (training, evaluation) logs through the same loguru logger, at INFO.

Progress bars are for terminals: when stderr is not one (a log file, CI, `make ... 2> log`), they are
switched off for this process and the ones it starts, so logs do not fill with carriage returns.
"""

from __future__ import annotations

import os
import sys

from loguru import logger

from pipeline import compat

CONSOLE_LEVEL = "INFO" if os.environ.get("MEDBABEL_VERBOSE") else "WARNING"


OWN_MODULES = ("pipeline", "stages", "moe_train")


def _for_console(record: dict) -> bool:
    """medbabel's own records from INFO; datatrove's from CONSOLE_LEVEL, but not its warning that a task
    has no file of a folder: expected whenever a stage runs more tasks than a folder has files (the task
    logs keep it)."""
    name = record["name"] or ""
    if name.split(".")[0] in OWN_MODULES and name != __name__:  # this module relays datatrove's lines
        return True
    if record["level"].no < logger.level(CONSOLE_LEVEL).no:
        return False
    return not record["message"].startswith("No files found on ")


def progress_bars_on() -> bool:
    """Whether to draw progress bars: not once `progress_bars_off_unless_terminal` (or the user, with
    TQDM_DISABLE) switched them off. Readers ask this when built, and carry the answer to the task
    processes, because datatrove passes their `doc_progress` to tqdm explicitly."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("1", "true", "yes")


def progress_bars_off_unless_terminal() -> bool:
    """Switch tqdm's (and the Hugging Face libraries') progress bars off when stderr is not a terminal,
    in this process (tqdm may be imported already: its bars are told `disable=True`) and in the ones it
    starts (through the environment); returns whether bars stay on."""
    if sys.stderr.isatty():
        return True
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from tqdm import std

    if not getattr(std.tqdm.__init__, "medbabel_quiet", False):
        shown = std.tqdm.__init__

        def quiet(self, *args, **kwargs):
            kwargs["disable"] = True
            shown(self, *args, **kwargs)

        quiet.medbabel_quiet = True
        std.tqdm.__init__ = quiet
    return False


def _console_logger() -> None:
    logger.remove()
    logger.add(
        sys.stderr,
        level="INFO",
        colorize=compat.datatrove_colorize_logs(),
        filter=_for_console,
    )


def _task_logger(logging_dir, rank: int, local_rank: int = 0, node_rank: int = -1):
    """datatrove's task logger with the console sink at CONSOLE_LEVEL; the file keeps everything."""
    logger.remove()
    logfile = logging_dir.open(f"logs/task_{rank:05d}.log", "w")
    prefix = f"[NODE {node_rank}] " if node_rank != -1 else ""
    fmt = f"{prefix}{{time:YYYY-MM-DD HH:mm:ss.SSS}} | {{level: <8}} | {{name}}:{{function}}:{{line}} - {{message}}"
    logger.add(sys.stderr, level="INFO" if local_rank == 0 else "ERROR", format=fmt, filter=_for_console)
    logger.add(logfile, level="DEBUG", format=fmt, colorize=False)
    logger.info(f"Launching pipeline for {rank=}")
    return logfile


def install() -> None:
    """Route datatrove's logging as above, in this process (called on import of pipeline.record_io,
    which every stage pipeline unpickles, so worker processes get it too)."""
    compat.route_datatrove_logging(_console_logger, _task_logger)
    _console_logger()
