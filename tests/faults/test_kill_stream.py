"""SIGKILL of head training while its loader thread reads the token stores; the re-run resumes
to the head an uninterrupted run gives.

The real Lite2 token store of 180 Kermany images and MiniLM word-token captions, windows of
32 rows (so every epoch reads several windows in the ``stitch-loader`` thread). Two scenarios:
checkpoints at epochs' ends (the kill lands in the epoch after checkpoint k), and a checkpoint
after every step (``--checkpoint-every 0``: the re-run resumes within the epoch). The kill
waits until the loader thread is seen in /proc, then strikes within 20 ms.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from .helpers import Kill
from .scenarios import Scenario, _ckpt_epoch_at_least, assert_trials_survive, same_head

TRIALS = int(os.environ.get("STITCHKIT_FAULT_TRIALS", "2"))


def thread_running(pid: int, name: str) -> bool:
    """Whether process ``pid`` has a thread whose name (as /proc shows it) is ``name`` (Linux)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/comm") as fh:
                if fh.read().strip() == name:
                    return True
        except OSError:
            continue
    return False


def loader_after_epoch(ckpt: Path, k: int) -> Callable[[int], Callable[[], bool]]:
    """A ``ready_for``: checkpoint ``k`` is written and the run's loader thread is reading."""

    def ready_for(pid: int) -> Callable[[], bool]:
        epoch_done = _ckpt_epoch_at_least(ckpt, k)
        return lambda: epoch_done() and thread_running(pid, "stitch-loader")

    return ready_for


@pytest.fixture(scope="module")
def scenarios(lite2_token_store: Path, lite2_token_captions: Path) -> dict[str, Scenario]:
    def head_args(extra: list[str]) -> Callable[[Path], list[str]]:
        def args(out: Path) -> list[str]:
            return ["head", "train", str(lite2_token_store), str(lite2_token_captions), "-o", str(out),
                    "--epochs", "6", "--min-steps", "0", "--batch-size", "8", "--width", "16", "--heads", "2",
                    "--patience", "100", "--threads", "1", "--no-plot", "--shuffle-buffer", "32",
                    "--token-dropout", "0.25", "--dropout", "0.1", *extra]
        return args

    def kill(rng: random.Random, out: Path) -> Kill:
        k = rng.randint(1, 4)
        return Kill(rng.uniform(0, 0.02), label=f"loader reading, after epoch {k}",
                    ready_for=loader_after_epoch(out.with_name(out.name + ".ckpt"), k))

    def leftovers(out: Path) -> list[Path]:
        return [out.with_name(out.name + ".ckpt")]

    return {s.name: s for s in [
        Scenario("head train stream", head_args([]), kill, same_head, leftovers, max_delay=8.0),
        Scenario("head train stream, checkpoint every step", head_args(["--checkpoint-every", "0"]),
                 kill, same_head, leftovers, max_delay=8.0),
    ]}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["head train stream", "head train stream, checkpoint every step"])
def test_a_run_killed_while_its_loader_reads_resumes_to_the_same_head(
    name: str, scenarios: dict[str, Scenario], tmp_path: Path
) -> None:
    assert_trials_survive(scenarios[name], tmp_path, TRIALS)
