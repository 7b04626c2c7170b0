"""Markdown tables of the probe AUC ratio (and held-out cosine) from `stitch sweep` CSVs.

    python examples/cross-family/table.py examples/cross-family/results/sweep-*.csv
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def table(path: Path) -> str:
    rows = list(csv.DictReader(open(path, newline="")))
    counts = sorted({int(r["n_anchors"]) for r in rows})
    methods = sorted({r["method"] for r in rows}, key=["ridge", "affine", "linear", "orthogonal"].index)
    lines = [f"{path.stem}", "", "| method: metric | " + " | ".join(map(str, counts)) + " |",
             "|---|" + "---|" * len(counts)]
    for method in methods:
        for key, label in (("probe_auc_ratio", "probe AUC ratio"), ("cosine_mean", "held-out cosine"),
                           ("top1", "retrieval top-1")):
            cells = []
            for n in counts:
                (r,) = [r for r in rows if r["method"] == method and int(r["n_anchors"]) == n]
                value = r.get(f"{key}_mean") or ""
                cells.append(f"{float(value):.3f}" if value not in ("", "nan") else f"— ({r.get('error', 'failed')})")
            lines.append(f"| {method}: {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join(table(Path(p)) for p in sys.argv[1:]))
