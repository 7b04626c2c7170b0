"""`stitch classify --head a --head b`: an ensemble of heads scores the mean of their logits.

Real stores and heads: the 40-image Lite2 token stores of the session's ``tok`` fixture, two small token
heads trained with different seeds, and a global head to show a mismatch is one clear line.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from stitchkit.errors import UsageError
from stitchkit.head import HeadConfig, TrainConfig, train_head
from stitchkit.zeroshot.prompts import load_prompts
from stitchkit.zeroshot.scoring import classify_store
from tests.test_tokens import _ids

pytestmark = pytest.mark.slow


def _train(tok: dict[str, Path], name: str, seed: int, tokens: bool = True) -> Path:
    path = tok["dir"] / name
    if not path.exists():
        cfg = TrainConfig(min_steps=0, head=HeadConfig(width=16, heads=2), epochs=3, batch_size=10, lr=3e-3,
                          val_fraction=0.0, image_tokens=tokens, text_tokens=tokens)
        train_head(tok["lite2"], tok["captions"], out=path, config=replace(cfg, seed=seed),
                   ids=_ids(tok["lite2"], "train"))
    return path


def _scores(path: Path) -> dict[str, float]:
    return {r["id"]: float(r["score:pneumonia"]) for r in csv.DictReader(path.open())}


def test_ensemble_is_the_mean_of_the_heads_log_odds(tok: dict[str, Path], stitch) -> None:
    heads = [_train(tok, f"seed{s}.head", s) for s in (0, 1)]
    d = tok["dir"]
    single = []
    for h in heads:
        out = d / f"{h.stem}.csv"
        classify_store(tok["lite2"], load_prompts("pneumonia"), text_model="minilm", head_path=h,
                       output=out, bootstrap=0, allow_overlap=True)  # every row: the train ones too
        single.append(_scores(out))
    assert max(abs(single[0][k] - single[1][k]) for k in single[0]) > 1e-3  # the seeds differ
    out = d / "ensemble.csv"
    r = stitch("classify", tok["lite2"], "--prompts", "pneumonia", "--text-model", "minilm",
               "--head", heads[0], "--head", heads[1], "--bootstrap", "0", "-o", out, "--json", "--allow-overlap")
    assert r.returncode == 0, r.stderr
    ens = _scores(out)
    # two classes: the ensemble's log-odds is the mean of the heads' (mean of class logits)
    for k, v in ens.items():
        assert v == pytest.approx((single[0][k] + single[1][k]) / 2, abs=1e-5)
    assert np.isfinite(list(ens.values())).all()


def test_heads_of_another_kind_do_not_ensemble(tok: dict[str, Path], stitch) -> None:
    token_head = _train(tok, "seed0.head", 0)
    global_head = _train(tok, "global0.head", 0, tokens=False)
    with pytest.raises(UsageError, match="differ in their image tokens"):
        classify_store(tok["lite2"], load_prompts("pneumonia"), text_model="minilm",
                       head_path=[token_head, global_head], bootstrap=0)
    r = stitch("classify", tok["lite2"], "--prompts", "pneumonia", "--text-model", "minilm",
               "--head", token_head, "--head", global_head, "--bootstrap", "0")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "ensemble" in r.stderr
