"""Running the real `stitch` entry point in-process or as a process that gets SIGKILLed.

Shared by ``tests/faults``, ``tests/test_bad_inputs.py`` and ``benchmarks/faults.py``.
In-process runs go through the same ``stitchkit.cli.errors.run`` wrapper as the console
script (one table of messages and exit codes); they exist because importing torch costs
5-15 s per process on the shared CI machine, so a matrix of ~100 subprocesses would not fit.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import resource
import signal
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

# Progress lines are not part of the one-line error contract. Off a terminal they look like
# "embed lite0: 12/24 3.1/s ETA 4s", "embed lite0: resuming at 8/24", sweep's one line per fit
# ("sweep: seed 0 n 20 orthogonal: cos 0.58 top1 0.50") and demo's "[3/14] stitch fit ...".
PROGRESS = re.compile(
    r"^(.+: \d+/\d+ [\d.]+/s ETA \S+$|.+: resuming at \d+/\d+$|sweep: seed \d+ n \d+ |\[\d+/\d+\] "
    r"|benchmark: \S+ \(\d+/\d+\)$)"
)


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def message_lines(self) -> list[str]:
        """stderr without warnings and progress lines: what the error contract is about."""
        return [
            line for line in self.stderr.splitlines()
            if line.strip() and not line.startswith("warning:") and not PROGRESS.match(line)
        ]


@contextlib.contextmanager
def file_size_limit(limit: int | None) -> Iterator[None]:
    """Make writes past ``limit`` bytes fail with EFBIG, as on a full disk (this process only).

    SIGXFSZ is ignored so that the write returns an error instead of killing the process.
    Only the soft limit is lowered, so it can be raised back afterwards.
    """
    if limit is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)


def run_inprocess(*args: object, fsize: int | None = None) -> Result:
    """Run `stitch ARGS` through the console script's wrapper in this process."""
    from stitchkit.cli.errors import run
    from stitchkit.cli.main import cli

    out, err = io.StringIO(), io.StringIO()
    argv = ["stitch", *map(str, args)]
    old_argv, old_hooks = sys.argv, (sys.excepthook, sys.unraisablehook)
    sys.argv = argv
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                warnings.catch_warnings(), file_size_limit(fsize):
            warnings.simplefilter("always")
            try:
                run(cli)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except Exception:  # noqa: BLE001 - what Python would print for an escaped error
                err.write(traceback.format_exc())
                code = 1
    finally:
        sys.argv = old_argv
        sys.excepthook, sys.unraisablehook = old_hooks
    return Result(code, out.getvalue(), err.getvalue())


def stitch_argv(*args: object) -> list[str]:
    return [sys.executable, "-m", "stitchkit.cli.main", *map(str, args)]


def limit_fsize(limit: int) -> Callable[[], None]:
    """preexec_fn for a child whose writes past ``limit`` bytes fail with EFBIG."""

    def _set() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return _set


def run_subprocess(*args: object, fsize: int | None = None, timeout: float = 600,
                   env: dict[str, str] | None = None) -> Result:
    proc = subprocess.run(
        stitch_argv(*args), capture_output=True, text=True, timeout=timeout,
        preexec_fn=limit_fsize(fsize) if fsize is not None else None, env=env,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


# -- kill -9 at a chosen point ---------------------------------------------------------------
@dataclass
class Kill:
    """Where to kill: when ``ready()`` first holds (or at once), then after ``delay`` seconds."""

    delay: float
    ready: Callable[[], bool] | None = None
    label: str = ""
    # A ``ready`` test that needs the run's pid (e.g. "its local Ray has started"), built once
    # the run is started; used where ``ready`` is None.
    ready_for: Callable[[int], Callable[[], bool]] | None = None


def kill_run(args: Sequence[object], kill: Kill, *, timeout: float = 300, stdout: Path | None = None,
             reap_group: bool = False) -> bool:
    """Start `stitch ARGS`, SIGKILL it at ``kill``; True if it was killed before it exited.

    ``stdout``: a file that receives what the run printed (else it is discarded).
    ``reap_group``: the run gets a process group of its own, and once the run is dead whatever
    it started and left there is killed too (a local Ray's GCS, raylet and agents, which else
    take a minute to notice that their driver died and would pile up over many trials).
    Only the driver is killed at the chosen point: the group goes after, as part of the clean-up.
    """
    out = open(stdout, "wb") if stdout is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        proc = subprocess.Popen(stitch_argv(*args), stdout=out, stderr=subprocess.DEVNULL,
                                start_new_session=reap_group)
    finally:
        if stdout is not None:
            out.close()
    try:
        return _kill_at(proc, kill, timeout)
    finally:
        if reap_group:
            reap(proc.pid)


def reap(pgid: int, grace: float = 1.0) -> None:
    """SIGKILL what is left of process group ``pgid`` (one this module started), after ``grace`` s."""
    time.sleep(grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _kill_at(proc: subprocess.Popen, kill: Kill, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    ready = kill.ready or (kill.ready_for(proc.pid) if kill.ready_for is not None else None)
    try:
        if ready is not None:
            while not ready() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
        end = time.monotonic() + kill.delay
        while proc.poll() is None and time.monotonic() < end:
            time.sleep(0.002)
        if proc.poll() is not None:
            return False
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def partials(folder: Path) -> list[Path]:
    """Temporary files of atomic writes (``.NAME.*.partial``) left in ``folder``."""
    return sorted(folder.glob(".*.partial"))


def appeared(pattern: str, folder: Path, count: int = 1) -> Callable[[], bool]:
    """A ``ready`` test: at least ``count`` files matching ``pattern`` exist in ``folder``."""

    def ready() -> bool:
        return len(list(folder.glob(pattern))) >= count

    return ready


def child_running(pid: int, name: str) -> Callable[[], bool]:
    """A ``ready`` test: process ``pid`` has a child whose command name is ``name`` (Linux)."""

    def ready() -> bool:
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return False
        for child in children:
            with contextlib.suppress(OSError):
                if Path(f"/proc/{child}/comm").read_text().strip() == name:
                    return True
        return False

    return ready
