"""Collect the token-head experiment's JSON outputs into one results file (and a table)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(work: Path, out: Path) -> None:
    res = work / "results"
    routes = {}
    for f in sorted(res.glob("classify-*.json")):
        r = json.loads(f.read_text())
        m = r["metrics"]
        if "schema" in r:  # a flat result record (stitchkit.results), what `--json` prints now
            def pair(key: str, m: dict = m) -> list[float] | None:
                return [m[f"{key}_ci_low"], m[f"{key}_ci_high"]] if f"{key}_ci_low" in m else None
            auc, auc_ci, acc, acc_ci = m["auc_pneumonia"], pair("auc_pneumonia"), m["accuracy"], pair("accuracy")
        else:  # the nested result of earlier versions
            ci = m.get("ci", {})
            auc, auc_ci = m["auc"]["pneumonia"], ci.get("auc", {}).get("pneumonia")
            acc, acc_ci = m["accuracy"], ci.get("accuracy")
        routes[f.stem.removeprefix("classify-")] = {
            "auc": auc, "auc_ci": auc_ci, "accuracy": acc, "accuracy_ci": acc_ci,
            "decision": m["threshold"] + (f", after {r['composition']['prior']['method']}"
                                          if "prior" in r["composition"] else ""),
            "priors": r["composition"].get("prior", {}).get("priors"),
            "n": m["n"], "notes": r["notes"], "scores": r["output"],
        }
    heads = {}
    for f in sorted(res.glob("head-*.json")):
        h = json.loads(f.read_text())
        heads[f.stem.removeprefix("head-")] = {
            "pairs": h["n_pairs"], "train": h["n_train"], "val": h["n_val"],
            "epochs_run": h["epochs_run"], "best_epoch": h["best_epoch"],
            "seconds": h["seconds"], "seconds_per_epoch": h["seconds"] / max(h["epochs_run"], 1),
            "validation": h["val"],
        }
    # Stitched over native: (b) against (a) for the same head, (e) stitched against (e) native.
    ratios = {}
    for k, v in routes.items():
        parts = k.split("-")
        # the native route of the same head: the longest a-<head...> key that prefixes it
        native = next((f"a-{'-'.join(parts[1:j])}" for j in range(len(parts), 1, -1)
                       if f"a-{'-'.join(parts[1:j])}" in routes), None)
        if k.startswith("b-") and native is not None:
            ratios[k] = v["auc"] / routes[native]["auc"]
        if "-stitched" in k:
            base = k.replace("-stitched", "").replace("-tokmap", "")
            if base in routes:
                ratios[k] = v["auc"] / routes[base]["auc"]
    data = {
        "setup": "examples/token-head/run.sh: 1,500 seeded Kermany train images (pairs, anchors), "
                 "624 Kermany test images (queries), covid-notes image-note pairs for (e); seed 0",
        "routes": routes, "heads": heads, "stitched_over_native": ratios,
    }
    out.write_text(json.dumps(data, indent=2) + "\n")
    print("| route | Kermany test AUC [95 % CI] | accuracy [95 % CI] | decision |")
    print("|---|---|---|---|")

    def ci(x: list[float] | None) -> str:
        return f" [{x[0]:.3f}, {x[1]:.3f}]" if x else ""

    for k, v in routes.items():
        print(f"| {k} | {v['auc']:.3f}{ci(v['auc_ci'])} | {v['accuracy']:.3f}{ci(v['accuracy_ci'])} "
              f"| {v['decision']} |")
    for k, v in ratios.items():
        print(f"stitched / native, {k}: {v:.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
