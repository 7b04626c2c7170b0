"""SIGKILL at seeded points in embed, apply, merge and head train; the re-run finishes the job.

Each trial kills the real command (a separate process) at a point drawn from a seeded RNG:
after some part files or checkpoint epochs, while the final file is being written, or after a
plain delay. Then: the output is absent or complete and equal to an uninterrupted run; the same
command re-run exits 0 with a result equal to the uninterrupted run; no temporary, part folder
or checkpoint is left. ``STITCHKIT_FAULT_TRIALS`` sets the trials per command (default 2);
``benchmarks/faults.py`` runs 50.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from stitchkit.fileio import _HOST, atomic_output

from .scenarios import Inputs, Scenario, assert_trials_survive, build

TRIALS = int(os.environ.get("STITCHKIT_FAULT_TRIALS", "2"))
N_IMAGES = 24  # six batches of four: enough part files to kill between, quick to embed


@pytest.fixture(scope="module")
def scenarios(kermany_manifest: Path, lite0_store: Path, lite2_store: Path,
              tmp_path_factory: pytest.TempPathFactory) -> dict[str, Scenario]:
    work = tmp_path_factory.mktemp("faults")
    with open(kermany_manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))[:N_IMAGES]
    manifest = work / "small.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return {s.name: s for s in build(Inputs(manifest, lite0_store, lite2_store, work / "inputs"))}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["embed", "apply", "merge", "head train"])
def test_a_killed_run_resumes_to_the_uninterrupted_result(
    name: str, scenarios: dict[str, Scenario], tmp_path: Path
) -> None:
    assert_trials_survive(scenarios[name], tmp_path, TRIALS)


def test_temporaries_of_dead_writers_are_removed(tmp_path: Path) -> None:
    """A kill -9 leaves `.NAME.HOST-PID.partial`; the next writer of NAME removes it."""
    final = tmp_path / "x.h5"
    dead = tmp_path / f".x.h5.{_HOST}-{2**22 + 12345}.partial"  # above pid_max: never running
    alive = tmp_path / f".x.h5.{_HOST}-{os.getppid()}.partial"  # our parent: still running
    other_host = tmp_path / ".x.h5.another-host-1.partial"
    other_file = tmp_path / f".y.h5.{_HOST}-{2**22 + 12345}.partial"
    for p in (dead, alive, other_host, other_file):
        p.write_bytes(b"half")
    with atomic_output(final) as tmp:
        tmp.write_bytes(b"whole")
    assert final.read_bytes() == b"whole"
    assert not dead.exists()
    assert alive.exists() and other_host.exists() and other_file.exists()
