"""SIGKILL at seeded points in classify, sweep, fit --engine ray and embed --engine ray.

Same machinery as ``test_kill.py``: each trial kills the real command (a separate process)
while it writes its result, after part files, once its local Ray is up, or after a plain delay;
what it left is absent or whole and equal to an uninterrupted run (a --json record on stdout
too); the same command re-run gives the uninterrupted result and leaves no temporary behind.
``STITCHKIT_FAULT_TRIALS`` sets the trials per command (default 2); ``benchmarks/faults.py``
runs 50. The Ray scenarios are skipped where Ray is not installed (the `ray` extra).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .scenarios import (
    MORE,
    RAY,
    Inputs,
    Scenario,
    assert_trials_survive,
    build_more,
    small_manifest,
)

TRIALS = int(os.environ.get("STITCHKIT_FAULT_TRIALS", "2"))
# A Ray trial starts a local Ray twice (the killed run, then the re-run: 20-40 s each on two
# cores), so `make test` kills each Ray command once, at a point tied to its progress;
# STITCHKIT_FAULT_TRIALS sets both, and benchmarks/faults.py runs 50 of each.
RAY_TRIALS = int(os.environ.get("STITCHKIT_FAULT_TRIALS", "1"))
N_IMAGES = 24  # embed --engine ray: six batches of four


@pytest.fixture(scope="module")
def scenarios(kermany_manifest: Path, lite0_store: Path, lite2_store: Path,
              tmp_path_factory: pytest.TempPathFactory) -> dict[str, Scenario]:
    work = tmp_path_factory.mktemp("faults-more")
    manifest = small_manifest(kermany_manifest, work, N_IMAGES)
    names = MORE if RAY else tuple(n for n in MORE if "ray" not in n)
    return {s.name: s for s in build_more(Inputs(manifest, lite0_store, lite2_store, work / "inputs"), names)}


needs_ray = pytest.mark.skipif(not RAY, reason="needs ray[data] (the `ray` extra)")


@pytest.fixture(scope="module")
def shared_ray() -> Iterator[None]:
    """One local Ray for the uninterrupted runs and the re-runs, which run in this process (the
    engine joins a session its caller started): a start costs 20-40 s on two cores. Each killed
    run is a process of its own and starts its own Ray, as a user's would;
    tests/test_engine_ray.py re-runs a killed run on a fresh one."""
    if not RAY:
        yield
        return
    import ray

    from stitchkit.engines.ray_engine import ray_session

    with ray_session(ray, None, os.cpu_count() or 1):
        yield


@pytest.mark.slow
@pytest.mark.parametrize("name", [
    "classify", "sweep",
    pytest.param("fit ray", marks=needs_ray), pytest.param("embed ray", marks=needs_ray),
])
def test_a_killed_run_gives_the_uninterrupted_result(
    name: str, scenarios: dict[str, Scenario], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if "ray" in name:
        request.getfixturevalue("shared_ray")
    assert_trials_survive(scenarios[name], tmp_path, RAY_TRIALS if "ray" in name else TRIALS)
