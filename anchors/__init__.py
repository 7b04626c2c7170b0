"""Curated prompt sets, anchor lists and benchmark suites, installed as the package data ``stitchkit.anchors``.

The folder stays at the top of the repository (where users look for it); pyproject.toml maps it
into the package so that a wheel install finds ``--prompts pneumonia`` too.
"""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
PROMPTS_DIR = DATA_DIR / "prompts"
LISTS_DIR = DATA_DIR / "lists"
SUITES_DIR = DATA_DIR / "suites"  # `stitch benchmark SUITE`: papers.yaml, demo.yaml
