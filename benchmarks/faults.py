"""Kill -9 survival: how many of N SIGKILLed runs per command resume to the uninterrupted result.

For embed, apply, merge, head train, classify, sweep, fit --engine ray and embed --engine ray:
start the real `stitch` command as a process, SIGKILL it at a seeded point (after some part
files or checkpoint epochs, while the final file is being written, once its local Ray is up, or
after a plain delay), check that no output claims a completeness it does not have (and that a
--json record on stdout is whole or absent), re-run the same command and compare with an
uninterrupted run. Prints ``command: survived/trials`` per command (and how many trials were
killed before the command finished on its own), then each failure.

    python benchmarks/faults.py                      # 50 trials per command
    python benchmarks/faults.py --trials 3 --commands embed,merge
    python benchmarks/faults.py --commands classify,sweep,"fit ray","embed ray"
    python benchmarks/faults.py --commands "fit ray" --minutes 12   # as many trials as fit
    python benchmarks/faults.py --smoke   # one trial of merge on 8 images (seconds)

The scenarios are the ones tests/faults/test_kill.py and test_kill_more.py run a few of
(tests/faults/scenarios.py); inputs are the first --images Kermany images of $STITCHKIT_DATA,
embedded here once. The Ray scenarios need the `ray` extra. Each command also prints
``ratio: COMMAND survived / trials``; the exit status is 1 when a trial failed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

# common sets HF_HUB_OFFLINE before stitchkit loads a model
from common import (
    ROOT,
    kermany_rows,
    load_average,
    parse_args,
    print_header,
    print_ratio,
    write_manifest,
)

# tests/faults is a package named `faults`, like this script: put tests/ first on the path.
sys.path.insert(0, str(ROOT / "tests"))

from faults.scenarios import MORE, Inputs, build, build_more, reference, rng_for, trial  # noqa: E402

COMMANDS = ("embed", "apply", "merge", "head train", *MORE)


def prepare(work: Path, n_images: int) -> Inputs:
    """A manifest of the first images and their lite0 / lite2 stores (embedded in this process)."""
    from stitchkit.embed import embed_store
    from stitchkit.encoders import load_encoder
    from stitchkit.inputs import read_inputs

    # Both classes, so label captions differ and the head has something to learn.
    manifest = write_manifest(kermany_rows(n_images, balanced=True), work / "images.csv")
    stores = {}
    for model in ("lite0", "lite2"):
        stores[model] = work / f"{model}.h5"
        if not stores[model].exists():
            embed_store(read_inputs(manifest), load_encoder(model), stores[model], workers=0)
    return Inputs(manifest, stores["lite0"], stores["lite2"], work / "inputs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=50, help="kills per command")
    ap.add_argument("--commands", default=",".join(COMMANDS), help="comma-separated among " + ", ".join(COMMANDS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--images", type=int, default=24, help="images in the manifest (batches of 4 for embed)")
    ap.add_argument("--work", type=Path, default=None, help="folder to work in (default: a temporary one)")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="one line per trial: the kill point, whether it hit, what it left on disk")
    ap.add_argument("--minutes", type=float, default=None,
                    help="stop a command's trials once this many minutes went by (the count run is printed)")
    args = parse_args(ap, smoke={"trials": 1, "commands": "merge", "images": 8})
    names = [c.strip() for c in args.commands.split(",") if c.strip()]
    unknown = [c for c in names if c not in COMMANDS]
    if unknown:
        ap.error(f"unknown command(s) {unknown}: choose among {', '.join(COMMANDS)}")

    with tempfile.TemporaryDirectory(prefix="stitchkit-faults-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        inputs = prepare(work, args.images)
        scenarios = {s.name: s for s in build(inputs)}
        more = tuple(n for n in names if n in MORE)
        if more:
            scenarios.update({s.name: s for s in build_more(inputs, more)})
        print_header("faults", inputs_ready_in=f"{time.perf_counter() - t0:.0f}s",
                     trials_per_command=args.trials
                     if args.minutes is None else f"{args.trials} (at most {args.minutes:g} min each)")
        failures = []
        for name in names:
            scenario = scenarios[name]
            folder = work / name.replace(" ", "-")
            ref = reference(scenario, folder / "reference")
            rng = rng_for(scenario, args.seed)
            survived = killed = done = 0
            t1 = time.perf_counter()
            load0 = load_average()
            for i in range(args.trials):
                if args.minutes is not None and time.perf_counter() - t1 > 60 * args.minutes:
                    break
                result = trial(scenario, rng, i, folder / "trial", ref)
                done += 1
                if args.verbose:
                    print(f"  {name} trial {i}: kill {result.kill}: "
                          f"{'killed' if result.killed else 'finished first'}"
                          f"{f' ({result.state})' if result.state else ''}: "
                          f"{'survived' if result.survived else 'FAILED'}", flush=True)
                survived += result.survived
                killed += result.killed
                if not result.survived:
                    failures.append(f"{name} trial {i} (killed {result.kill}): {result.problem}")
            print(f"{name}: {survived}/{done} survived ({killed} killed before finishing, "
                  f"{time.perf_counter() - t1:.0f}s, load average 1/5/15 min {load0} -> {load_average()})",
                  flush=True)
            print_ratio(f"{name} survived / trials", survived / max(done, 1), f"{survived}/{done}", goal="1")
        for line in failures:
            print("FAILED", line)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
