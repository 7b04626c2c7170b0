"""Indexing MIMIC-CXR-JPG at full size: `read_inputs("mimic:FOLDER")` over 377,110 images.

A child process writes, in a temporary folder, the three label files of MIMIC-CXR-JPG 2.0.0 at
their published size, columns and gzip: the metadata (377,110 images of 227,835 studies of
65,379 patients, views in MIMIC's proportions), the CheXpert labels (one row per study but 8,
values drawn from the real CheXpert rows torchxrayvision ships) and the split. No images and no
reports: indexing computes paths, it never looks at them. The parent then times, in one process,

* the parsing floor: `csv.DictReader` over the three files, every row read and nothing kept;
* `read_inputs("mimic:FOLDER")`, the registry already imported (its import is timed apart);

and prints seconds, the ratio to the floor (``ratio: read_inputs / floor``), the process's peak
RSS (VmHWM: imports, floor and index together; the floor keeps nothing) and, with
``--tracemalloc``, the index's peak of Python allocations (a second, slower run). Goals at full
size: ≤ 10 s and ≤ 1 GB.

    python benchmarks/dataset_index.py            # the default spec: frontal images
    python benchmarks/dataset_index.py --query 'views=all' --tracemalloc
    python benchmarks/dataset_index.py --smoke    # 1 % of the size (--scale 0.01): seconds
"""

from __future__ import annotations

import argparse
import csv
import gzip
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import parse_args, peak_rss_mb, print_header, print_load, print_ratio

IMAGES, STUDIES, SUBJECTS, UNLABELLED = 377_110, 227_835, 65_379, 8
VIEWS = {"AP": 147_173, "PA": 96_161, "LATERAL": 82_853, "LL": 35_133, "": 15_773, "AP AXIAL": 2,
         "PA LLD": 3, "AP LLD": 3, "XTABLE LATERAL": 2, "LAO": 3, "RAO": 2, "SWIMMERS": 1, "LPO": 1}
META_COLUMNS = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition",
                "Rows", "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
                "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning"]
LABEL_COLUMNS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
                 "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
                 "Pneumothorax", "Support Devices"]
DESCRIBED = {"AP": ("CHEST (PORTABLE AP)", "antero-posterior", "Recumbent"),
             "PA": ("CHEST (PA AND LAT)", "postero-anterior", "Erect"),
             "LATERAL": ("CHEST (PA AND LAT)", "lateral", "Erect"), "LL": ("CHEST (PA AND LAT)", "left lateral", "Erect")}
FILES = ("mimic-cxr-2.0.0-metadata.csv.gz", "mimic-cxr-2.0.0-chexpert.csv.gz", "mimic-cxr-2.0.0-split.csv.gz")


def label_patterns() -> list[list[str]]:
    """The 14 values of real CheXpert rows (torchxrayvision's copy), in MIMIC's column order."""
    from stitchkit.inputs.cxr.layout import read_rows, shipped_file

    rows = read_rows(shipped_file("chexpert_train.csv.gz"))
    return [[row[c] for c in LABEL_COLUMNS] for _, row in zip(range(50_000), rows, strict=False)]


def scaled(scale: float) -> tuple[int, int, int, dict[str, int]]:
    """(images, studies, subjects, images per view) at ``scale`` times MIMIC's size."""
    views = {k: round(v * scale) for k, v in VIEWS.items()}
    images = sum(views.values())
    studies = min(images, max(1, round(STUDIES * scale)))
    return images, studies, min(studies, max(1, round(SUBJECTS * scale))), views


def generate(folder: Path, scale: float = 1.0) -> None:
    """Write the three files (run in a child process: its memory is not the index's)."""
    import numpy as np

    n_images, n_studies, n_subjects, view_counts = scaled(scale)
    rng = np.random.default_rng(0)
    subjects = np.sort(rng.choice(np.arange(10_000_000, 20_000_000), n_subjects, replace=False))
    owner = np.sort(np.r_[np.arange(n_subjects), rng.integers(0, n_subjects, n_studies - n_subjects)])
    studies = rng.choice(np.arange(50_000_000, 60_000_000), n_studies, replace=False)
    per_study = np.ones(n_studies, int) + np.bincount(rng.integers(0, n_studies, n_images - n_studies),
                                                      minlength=n_studies)
    views = np.repeat(list(view_counts), list(view_counts.values()))
    rng.shuffle(views)
    split_of = rng.choice(["train", "validate", "test"], n_subjects, p=[0.978, 0.008, 0.014])
    patterns = label_patterns()
    picks = rng.integers(0, len(patterns), n_studies)
    hexes = rng.bytes(20 * n_images).hex()
    times, millis = rng.integers(0, 235959, n_images), rng.integers(0, 999, n_images)
    opts = {"mode": "wt", "newline": "", "compresslevel": 6}
    with gzip.open(folder / FILES[0], **opts) as meta, gzip.open(folder / FILES[1], **opts) as lab, \
            gzip.open(folder / FILES[2], **opts) as spl:
        meta_w, lab_w, spl_w = csv.writer(meta), csv.writer(lab), csv.writer(spl)
        meta_w.writerow(META_COLUMNS)
        lab_w.writerow(["subject_id", "study_id", *LABEL_COLUMNS])
        spl_w.writerow(["dicom_id", "study_id", "subject_id", "split"])
        k = 0
        for s in range(n_studies):
            subject, study = int(subjects[owner[s]]), int(studies[s])
            if s >= min(UNLABELLED, n_studies - 1):  # the real chexpert file lacks a few studies
                lab_w.writerow([subject, study, *patterns[picks[s]]])
            for _ in range(per_study[s]):
                dicom = "-".join(hexes[40 * k + 8 * j:40 * k + 8 * j + 8] for j in range(5))
                view = str(views[k])
                described = DESCRIBED.get(view, ("CHEST (PA AND LAT)", "", ""))
                meta_w.writerow([dicom, subject, study, described[0], view, 3056, 2544, 21800506 + s % 300,
                                 f"{times[k]:06d}.{millis[k]:03d}", "Chest X-ray", described[1], described[2]])
                spl_w.writerow([dicom, study, subject, split_of[owner[s]]])
                k += 1
    assert k == n_images == sum(view_counts.values())


def floor(folder: Path) -> tuple[float, int]:
    """Seconds for csv.DictReader over the three files, every row read, nothing kept."""
    t0, n = time.perf_counter(), 0
    for name in FILES:
        with gzip.open(folder / name, "rt", newline="") as fh:
            for _ in csv.DictReader(fh):
                n += 1
    return time.perf_counter() - t0, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--query", default="", help="the spec's options, e.g. views=all")
    parser.add_argument("--tracemalloc", action="store_true", help="also measure the index's Python allocations")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="the files' size as a fraction of MIMIC-CXR-JPG's (the goals hold at 1)")
    parser.add_argument("--generate", type=Path, help=argparse.SUPPRESS)  # the child's job
    args = parse_args(parser, smoke={"scale": 0.01})
    if args.generate:
        generate(args.generate, args.scale)
        return
    print_header("dataset_index", images=f"{scaled(args.scale)[0]:,}")
    with tempfile.TemporaryDirectory(prefix="mimic-index-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--generate", str(folder), "--scale", str(args.scale)],
                       check=True)
        sizes = ", ".join(f"{n} {(folder / n).stat().st_size / 2**20:.1f} MB" for n in FILES)
        print(f"generated in {time.perf_counter() - t0:.1f} s: {sizes}")
        t0 = time.perf_counter()
        from stitchkit.inputs import formats, read_inputs

        formats()  # imports every input format's module once
        print(f"import stitchkit.inputs and its formats: {time.perf_counter() - t0:.1f} s, "
              f"peak RSS {peak_rss_mb():.0f} MB")
        base, rows = floor(folder)
        print(f"floor: csv.DictReader over the three files, {rows} rows: {base:.2f} s")
        spec = f"mimic:{folder}" + (f"?{args.query}" if args.query else "")
        t0 = time.perf_counter()
        inputs = read_inputs(spec)
        took = time.perf_counter() - t0
        print(f"read_inputs({spec.replace(tmp, 'TMP')!r}): {len(inputs.items)} items in {took:.2f} s "
              f"(goal ≤ 10 s at full size), process peak RSS {peak_rss_mb():.0f} MB (goal ≤ 1024)")
        print_ratio("read_inputs / floor", took / base, f"{took:.2f} s against {base:.2f} s")
        if args.tracemalloc:
            import tracemalloc

            del inputs
            tracemalloc.start()
            inputs = read_inputs(spec)
            print(f"index's peak of Python allocations (tracemalloc): {tracemalloc.get_traced_memory()[1] / 2**20:.0f} MB")
            tracemalloc.stop()
    print_load()


if __name__ == "__main__":
    main()
