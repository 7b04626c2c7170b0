"""The adaptation rule's curve: zero-shot AUC against `stitch adapt --dims`, on two domains.

Reads a finished `stitch demo` folder (default demo-out/). For each setting of ``--dims`` it
fits the Kermany adaptation map on Kermany's train images and NIH's on its training patients'
images (labels never read), then scores the demo's zero-shot routes, which were fitted on the
covid-notes pairs and never saw a Kermany or NIH label: the covid-notes global and token heads
and the cosine map into MiniLM, on Kermany test (normal against pneumonia) and on NIH's held-out
patients (pneumonia against no finding; every ChestX-ray14 finding with 10 positives, macro).
``--dims 0`` is the route without adaptation. Prints one markdown row per setting and route.

    python benchmarks/adapt_rule.py demo-out --dims 0,4,8,16,24,32,48,64,128,256
    python benchmarks/adapt_rule.py demo-out --smoke   # --dims 0,4 (on a `stitch demo --limit 8` folder: seconds)

It needs a finished demo folder: `stitch demo` takes hours at full size and about 5 minutes at
``--limit 8`` on 2 cores, so --smoke does not build one. Each setting with adaptation also prints
``ratio: adapted / unadapted AUC`` per route and data set.

docs/maps.md ("Adapting to a domain") shows its output: the default was fixed on NIH's
pneumonia row (the best setting there) and checked on Kermany.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

# common sets HF_HUB_OFFLINE before stitchkit loads a model
from common import parse_args, print_header, print_ratio

from stitchkit.maps.adapt import fit_adaptation
from stitchkit.zeroshot.benchmark import BenchmarkOptions, Route, load_suite, run_suite

DATASETS = ["kermany", "nih-pneumonia", "nih-findings"]


def routes(demo: Path) -> dict[str, dict]:
    return {
        "covid-notes global head": dict(head_path=str(demo / "head-covid-global.head")),
        "covid-notes token head": dict(head_path=str(demo / "head-covid-token.head")),
        "covid-notes cosine (Lite2 → MiniLM)": dict(map_path=str(demo / "covid-lite2-to-minilm.map"),
                                                     scoring="cosine", text_model="minilm"),
    }


def adaptation_maps(demo: Path, dims: float, folder: Path) -> dict[str, str]:
    if dims == 0:
        return {}
    domains = {"kermany": (demo / "k-train-lite2.h5", None),
               "nih": (demo / "nih-lite2.h5", demo / "manifests" / "nih-train-ids.txt")}
    maps = {}
    for name, (store, ids) in domains.items():
        path = folder / f"{name}-{dims:g}.map"
        fit_adaptation(store, ids=ids, dims=dims).save(path)
        maps[name] = str(path)
    return maps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("demo", nargs="?", default="demo-out", type=Path, help="a finished `stitch demo` folder")
    ap.add_argument("--dims", default="0,4,8,16,24,32,48,64,128,256", help="settings of --dims (0: no adaptation)")
    args = parse_args(ap, smoke={"dims": "0,4"})
    demo = args.demo
    if not (demo / "demo-suite.yaml").is_file():
        ap.error(f"{demo} is not a finished `stitch demo` folder (no demo-suite.yaml): run "
                 f"`stitch demo -o {demo}` first (`--limit 8`: a smaller one)")
    print_header("adapt_rule", demo=demo, dims=args.dims)
    suite = load_suite(str(demo / "demo-suite.yaml"))
    stores = {"kermany": str(demo / "k-test-lite2.h5"), "nih": str(demo / "nih-lite2.h5")}
    print("| dims | route | Kermany test AUC | NIH held-out: pneumonia AUC | NIH held-out: findings macro AUC |")
    print("|---|---|---|---|---|")
    unadapted: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for dims in (float(x) for x in args.dims.split(",")):
            adapt = adaptation_maps(demo, dims, folder)
            for name, route in routes(demo).items():
                data = run_suite(suite, stores, Route(adapt=adapt, **route), folder / "bench",
                                 BenchmarkOptions(bootstrap=0, datasets=DATASETS))
                auc = {d["name"]: d["metrics"]["auc_macro"] for d in data["datasets"]}
                print(f"| {'none' if dims == 0 else f'{dims:g}'} | {name} | "
                      + " | ".join(f"{auc[k]:.3f}" if k in auc else "—" for k in DATASETS) + " |", flush=True)
                if dims == 0:
                    unadapted[name] = auc
                elif name in unadapted:
                    # a small demo (--limit) has too few positives for some data sets: "—"
                    ratios = {k: auc[k] / unadapted[name][k] for k in DATASETS if k in auc and k in unadapted[name]}
                    print_ratio(f"adapted (--dims {dims:g}) / unadapted AUC, {name}",
                                sum(ratios.values()) / len(ratios),
                                "mean of " + ", ".join(f"{k} {r:.3f}" for k, r in ratios.items()))


if __name__ == "__main__":
    main()
