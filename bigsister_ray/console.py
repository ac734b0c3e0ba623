"""What the commands show on the terminal, and the log file that holds everything else.

Quiet by default: a command's terminal gets one line per step (a spinner or a progress bar while it runs), one
line per training epoch and its result; everything else goes to a log file whose path the first line names.
That is Ray's, Ray Data's, Ray Train's and Ray Serve's logging in this process, anything printed by the package
or by native code on the standard streams (file descriptors 1 and 2 are pointed at the log file while the
command runs), and Ray Data's progress bars (switched off). What Ray's workers, the Train controller and the
Serve replicas print is forwarded by Ray to this process's standard streams, so to the log file too, unless the
command started Ray with ``log_to_driver=False`` (``bigsister demo`` does): then it stays in Ray's session folder
(``<temp dir>/ray/session_*/logs``; :func:`ray_logs_dir`). ``verbose`` keeps everything on the terminal.

Training epochs are printed by this process, from the run's ``history.jsonl`` (the metrics rank 0 reports),
never by the workers: one line each, in :func:`bigsister_ray.train.loop.format_epoch`'s format.

Used as a context manager around one command (:func:`command_output`); the terminal and the loggers are
restored on the way out, also on an error or Ctrl-C, so an error message printed afterwards reaches the
terminal.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator

__all__ = ["Output", "Step", "command_output", "ray_logs_dir", "RAY_LOGGERS", "LOG_FILE"]

#: Loggers whose records go to the log file instead of the terminal.
RAY_LOGGERS = ("ray", "ray.serve", "ray.train", "ray.data", "ray.tune", "ray.air", "py.warnings")

#: The log file's name inside a command's output folder.
LOG_FILE = "bigsister.log"

_SHARD_RE = re.compile(r"shard (\d+)/(\d+)")


#: Read when Ray Data is imported or Ray starts: no progress bars (their text would fill the log).
QUIET_ENV = {"RAY_DATA_DISABLE_PROGRESS_BARS": "1"}


class Output:
    """One command's terminal lines and log file. Build it with :func:`command_output`."""

    def __init__(self, terminal: IO[str], result: IO[str], log: IO[str] | None, log_path: Path | None,
                 verbose: bool) -> None:
        from rich.console import Console

        self.verbose = verbose
        self.log_path = log_path
        self._log = log
        self._result = result
        self.console = Console(file=terminal, highlight=False, soft_wrap=True)

    # ------------------------------------------------------------------ lines
    def line(self, text: str) -> None:
        """One line on the terminal (rich markup allowed); a plain copy in the log file."""
        self.console.print(text)
        self.log(_plain(text), echo=False)

    def log(self, text: str, *, echo: bool = True) -> None:
        """Detail for the log file (and for the terminal too with ``verbose`` when ``echo``)."""
        if self._log is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            for part in str(text).splitlines() or [""]:
                self._log.write(f"{stamp} bigsister: {part}\n")
            self._log.flush()
        if self.verbose and echo:
            self.console.print(str(text), markup=False)

    def result(self, text: str) -> None:
        """The command's result on standard output (what scripts read), also in the log file."""
        self._result.write(f"{text}\n")
        self._result.flush()
        self.log(text, echo=False)

    # ------------------------------------------------------------------ steps
    @contextmanager
    def step(self, title: str, *, total: int | None = None) -> Iterator["Step"]:
        """A spinner (or a bar when ``total`` is known) while the block runs, then one line: done and how long."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        t0 = time.perf_counter()
        self.log(f"step: {title}", echo=False)
        columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn()]
        progress = Progress(*columns, console=self.console, transient=True,
                            disable=self.verbose or not self.console.is_terminal)
        with progress:
            step = Step(self, progress, progress.add_task(title, total=total), title)
            try:
                yield step
            except BaseException:
                progress.stop()
                self.line(f"[red]failed[/red] {title} after {time.perf_counter() - t0:.0f} s"
                          + (f" (log: {self.log_path})" if self.log_path else ""))
                raise
        self.line(f"[green]done[/green] {title} in {time.perf_counter() - t0:.0f} s" + (f": {step.summary}" if step.summary else ""))

    # ------------------------------------------------------------------ training epochs
    @contextmanager
    def epochs(self, out: Path | None, epochs: int) -> Iterator[None]:
        """While the block trains into ``out``: one terminal line per epoch, from the run's ``history.jsonl``
        (``out/history.jsonl``, or ``out/<train.name>/history.jsonl``).

        Only records written after the block began are shown (a resumed run's earlier epochs are not). With
        ``verbose`` the workers' own lines reach the terminal, so nothing is added; for a run folder on object
        storage (``out`` None) neither.
        """
        if out is None or self.verbose:
            yield
            return
        stop = threading.Event()
        watcher = _EpochWatcher(Path(out), epochs, time.time(), self.line)
        thread = threading.Thread(target=watcher.run, args=(stop,), name="bigsister-epochs", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5.0)
            watcher.poll()  # epochs written in the last moments


class Step:
    """The running step of :meth:`Output.step`: progress and a summary for its closing line."""

    def __init__(self, out: Output, progress: Any, task: Any, title: str) -> None:
        self._out, self._progress, self._task, self.title = out, progress, task, title
        self.summary = ""

    def update(self, *, completed: int | None = None, total: int | None = None, note: str | None = None) -> None:
        desc = f"{self.title}: {note}" if note else None
        self._progress.update(self._task, completed=completed, total=total, description=desc)

    def message(self, text: str) -> None:
        """A progress message from the work (e.g. ``prepare``'s): to the log; ``shard i/n`` moves the bar."""
        self._out.log(text)
        m = _SHARD_RE.search(text)
        if m:
            self.update(completed=int(m.group(1)), total=int(m.group(2)), note="writing shards")


class _EpochWatcher:
    """Reads new lines of ``history.jsonl`` files under a folder and hands each new epoch's line to ``emit``."""

    def __init__(self, parent: Path, epochs: int, since: float, emit: Callable[[str], None]) -> None:
        self.parent, self.epochs, self.since, self.emit = parent, epochs, since, emit
        self._offsets: dict[Path, int] = {}
        self._lock = threading.Lock()

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(1.0):
            self.poll()

    def poll(self) -> None:
        from bigsister_ray.train.loop import HISTORY_FILE, format_epoch

        with self._lock:
            for path in [self.parent / HISTORY_FILE, *sorted(self.parent.glob(f"*/{HISTORY_FILE}"))]:
                try:
                    with path.open("rb") as f:
                        f.seek(self._offsets.get(path, 0))
                        chunk = f.read()
                except OSError:
                    continue
                complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits for the next poll
                self._offsets[path] = self._offsets.get(path, 0) + len(complete)
                for raw in complete.splitlines():
                    try:
                        record = json.loads(raw)
                    except ValueError:
                        continue
                    if record.get("event") == "epoch" and float(record.get("time", 0)) >= self.since:
                        self.emit(format_epoch(record, self.epochs))


def _plain(text: str) -> str:
    from rich.text import Text

    return Text.from_markup(text).plain


def _route_loggers(handler: logging.Handler) -> list[tuple[logging.Logger, list[logging.Handler], bool]]:
    """Send the Ray loggers' records to ``handler`` instead of the terminal; returns what to restore."""
    saved = []
    for name in RAY_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, list(logger.handlers), logger.propagate))
        for h in list(logger.handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                logger.removeHandler(h)
        logger.addHandler(handler)
        logger.propagate = False
    return saved


def _fileno(stream: Any) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation, ValueError):
        return None


@contextmanager
def command_output(log_path: Path | None, *, verbose: bool = False, terminal: str = "stderr",
                   ray_logging: bool = True, announce: bool = True) -> Iterator[Output]:
    """The terminal and log file of one command (see the module docstring).

    ``log_path``: the log file (appended to; its folder is created); None keeps everything on the terminal.
    ``terminal``: ``"stderr"`` (progress beside a result on stdout) or ``"stdout"``. ``ray_logging``: import
    Ray Data first, so its logging and progress-bar settings are in place before anything runs. ``announce``:
    the first terminal line names the log file.
    """
    if verbose or log_path is None:
        yield Output(terminal=sys.stderr if terminal == "stderr" else sys.stdout, result=sys.stdout, log=None,
                     log_path=None, verbose=True)
        return
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env_before = {k: os.environ.get(k) for k in QUIET_ENV}
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    bars_before = None
    if ray_logging:
        import ray.data

        context = ray.data.DataContext.get_current()
        bars_before, context.enable_progress_bars = context.enable_progress_bars, False
    log = open(log_path, "a", buffering=1, encoding="utf-8")
    handler = logging.StreamHandler(log)
    handler.setLevel(logging.INFO)  # Ray Data logs DEBUG to its own file in Ray's session folder
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    routed = _route_loggers(handler)
    logging.captureWarnings(True)
    # Point fds 1 and 2 at the log; the terminal and the result keep copies of the originals.
    saved: dict[int, int] = {}
    for stream in (sys.stdout, sys.stderr):
        fd = _fileno(stream)
        if fd is not None and fd not in saved:
            stream.flush()
            saved[fd] = os.dup(fd)
            os.dup2(log.fileno(), fd)
    opened: list[IO[str]] = []

    def _original(stream: Any) -> IO[str]:
        fd = _fileno(stream)
        if fd is None or fd not in saved:
            return stream
        f = os.fdopen(os.dup(saved[fd]), "w", buffering=1, encoding=getattr(stream, "encoding", None) or "utf-8")
        opened.append(f)
        return f

    result = _original(sys.stdout)
    term = _original(sys.stderr) if terminal == "stderr" else result
    out = Output(terminal=term, result=result, log=log, log_path=log_path, verbose=False)
    try:
        if announce:
            out.line(f"[dim]details: {log_path}[/dim]")
        yield out
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        for f in opened:
            f.close()
        logging.captureWarnings(False)
        if bars_before is not None:
            context.enable_progress_bars = bars_before
        for key, value in env_before.items():
            if value is None:
                os.environ.pop(key, None)
        for logger, handlers, propagate in routed:
            # the handlers as they were, in their order, then any that were added meanwhile (Ray's, at init)
            added = [h for h in logger.handlers if h is not handler and h not in handlers]
            logger.handlers[:] = [*handlers, *added]
            logger.propagate = propagate
        log.close()


def ray_logs_dir() -> str | None:
    """The log folder of the Ray session this process is connected to (workers, raylet, Serve), or None."""
    import ray

    if not ray.is_initialized():
        return None
    try:
        from ray._private import worker

        return worker._global_node.get_logs_dir_path()
    except AttributeError:  # connected as a client: the logs live on the cluster's head node
        return None
