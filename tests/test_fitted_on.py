"""What a head or a map was fitted on (stitchkit.fitted_on): recorded hashed in its file, and a
classification of rows that trained the head refused unless --allow-overlap."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from stitchkit.fitted_on import (
    FittedOn,
    OverlapError,
    Part,
    Scored,
    hash_keys,
    overlap,
    record_overlap,
)
from stitchkit.store import EmbeddingStore
from stitchkit.zeroshot.prompts import load_prompts
from stitchkit.zeroshot.scoring import classify_store

V1 = Path(__file__).parent / "data" / "formats" / "v1"


def _ids(path: Path) -> list[str]:
    return path.read_text().split()


# -- the record itself, no model --------------------------------------------------------------
def test_hashes_are_distinct_sorted_uint64_and_stable() -> None:
    h = hash_keys(["b", "a", "b", "00000061_012.png"])
    assert h.dtype == np.uint64 and len(h) == 3 and (np.diff(h.astype(np.float64)) > 0).all()
    # BLAKE2b-64 of the UTF-8 id, little-endian: the same on every machine and version
    import hashlib

    expected = int.from_bytes(hashlib.blake2b(b"00000061_012.png", digest_size=8).digest(), "little")
    assert expected in h.tolist()
    assert hash_keys([1, 2]).tolist() == hash_keys(["1", "2"]).tolist()


def _store(ids: list[str], groups: list[str] | None) -> SimpleNamespace:
    return SimpleNamespace(ids=np.array(ids, dtype=object),
                           groups=None if groups is None else np.array(groups, dtype=object))


def test_patients_are_compared_within_one_data_set_only() -> None:
    """NIH's held-out image of a training patient is shared; covid's patient "17" is not
    NIH's patient "17" (the query store holds none of the part's images)."""
    fitted = FittedOn.of([Part.of(["n1_0.png", "n2_0.png"], ["1", "2"], "nih.h5")])
    nih = _store(["n1_0.png", "n1_1.png", "n3_0.png"], ["1", "1", "3"])
    held_out = Scored.of(nih, np.array([1, 2]))  # not trained on, but n1_1 is patient 1's
    found = overlap(fitted, held_out)
    assert found["rows_in_training"] == 0 and found["patients_shared"] == 1
    assert found["rows_of_shared_patients"] == 1 and found["patients_compared"] is True
    other = _store(["c17.png", "c18.png"], ["1", "2"])  # another data set, the same group names
    found = overlap(fitted, Scored.of(other, np.arange(2)))
    assert found["patients_shared"] == 0 and "another data set" in found["patients_compared"]
    unknown = overlap(FittedOn(None), held_out)
    assert unknown["checked"] is False and unknown["rows_in_training"] is None


def _plan(fitted: FittedOn, store: SimpleNamespace) -> SimpleNamespace:
    head = SimpleNamespace(fitted_on_=fitted)
    return SimpleNamespace(head=head, mapper=None, store=store, head_name="h.head",
                           composition={"head": {"path": "h.head"}}, notes=[])


def test_a_head_that_trained_on_the_rows_or_their_patients_is_refused_in_one_line() -> None:
    fitted = FittedOn.of([Part.of(["n1_0.png", "n2_0.png"], ["1", "2"], "nih.h5")])
    store = _store(["n1_0.png", "n1_1.png", "n2_0.png", "n3_0.png"], ["1", "1", "2", "3"])
    with pytest.raises(OverlapError) as err:
        record_overlap(_plan(fitted, store), np.arange(4), allow_overlap=False)
    assert str(err.value) == ("2 of 4 rows trained head h.head (2 patients shared, 1 more rows of them); "
                              "score held-out rows with --ids or pass --allow-overlap")
    with pytest.raises(OverlapError, match="0 of 1 rows trained head h.head \\(1 patients shared"):
        record_overlap(_plan(fitted, store), np.array([1]), allow_overlap=False)
    plan = _plan(fitted, store)
    record_overlap(plan, np.arange(4), allow_overlap=True)
    assert plan.composition["head"]["overlap"]["rows_in_training"] == 2
    assert "not held-out" in plan.notes[-1]
    plan = _plan(fitted, store)
    record_overlap(plan, np.array([3]), allow_overlap=False)  # patient 3: held out
    assert plan.composition["head"]["overlap"]["patients_shared"] == 0 and not plan.notes


def test_an_old_head_without_the_record_loads_and_is_unknown() -> None:
    from stitchkit.head import Head

    head = Head.load(V1 / "head.head")
    assert not head.fitted_on_.known
    plan = _plan(head.fitted_on_, _store(["a", "b"], None))
    record_overlap(plan, np.arange(2), allow_overlap=False)
    assert plan.composition["head"]["overlap"]["checked"] is False
    assert "unknown" in plan.notes[-1]


# -- on the session's head and store ------------------------------------------------------------
def test_the_head_records_the_ids_it_trained_on(pneumonia_head: dict[str, Path]) -> None:
    from stitchkit.artifacts import describe_artifact
    from stitchkit.head import Head

    train = _ids(pneumonia_head["train_ids"])
    fitted = Head.load(pneumonia_head["head"]).fitted_on_
    (part,) = fitted.parts
    assert part.n_rows == len(train) == 120 and part.groups is None  # Kermany has no groups
    np.testing.assert_array_equal(part.ids, hash_keys(train))
    described = describe_artifact(pneumonia_head["head"])
    assert described["tensors"]["fitted_on.0.ids"] == [120]
    assert described["fitted_on"]["parts"][0]["n_ids"] == 120


def test_classify_refuses_the_heads_training_rows(lite2_store: Path, pneumonia_head: dict[str, Path],
                                                  tmp_path: Path, stitch) -> None:
    from stitchkit.results import to_record

    out = tmp_path / "s.csv"
    r = stitch("classify", lite2_store, "--prompts", "pneumonia", "--text-model", "minilm",
               "--head", pneumonia_head["head"], "-o", out, "--bootstrap", "0")
    assert r.returncode == 2, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: 120 of 180 rows trained head {pneumonia_head['head']}; "
                      "score held-out rows with --ids or pass --allow-overlap"]
    assert not out.exists() and "Traceback" not in r.stderr
    prompts = load_prompts("pneumonia")
    allowed = classify_store(lite2_store, prompts, text_model="minilm", head_path=pneumonia_head["head"],
                             bootstrap=0, allow_overlap=True)
    assert allowed.n == 180 and allowed.overlap["rows_in_head_training"] == 120
    assert any("120 of 180 rows trained head" in n and "not held-out" in n for n in allowed.notes)
    record = to_record("classify", allowed.to_dict())
    assert record["overlap"]["rows_in_head_training"] == 120
    held_out = classify_store(lite2_store, prompts, text_model="minilm", head_path=pneumonia_head["head"],
                              bootstrap=0, ids=_ids(pneumonia_head["test_ids"]))
    assert held_out.n == 60 and held_out.overlap["rows_in_head_training"] == 0
    assert held_out.composition["head"]["overlap"]["checked"] is True


def test_a_map_records_its_anchors_and_the_record_counts_them(lite0_store: Path, lite2_store: Path,
                                                               pneumonia_head: dict[str, Path],
                                                               tmp_path: Path) -> None:
    from stitchkit.maps import AnchorPlan, fit_map, load_map

    train = _ids(pneumonia_head["train_ids"])
    anchors = train[:40]
    fit_map(lite0_store, lite2_store, "ridge", plan=AnchorPlan(anchors=anchors, holdout=0.0, metrics=False)
            ).save(tmp_path / "m.map")
    m = load_map(tmp_path / "m.map")
    (part,) = m.fitted_on_.parts
    assert part.n_rows == 40 and set(part.ids.tolist()) == set(hash_keys(anchors).tolist())
    with EmbeddingStore(lite0_store) as s:
        assert part.store == str(s.path)
    res = classify_store(lite0_store, load_prompts("pneumonia"), text_model="minilm", map_path=tmp_path / "m.map",
                         head_path=pneumonia_head["head"], bootstrap=0, ids=train[:50] + _ids(pneumonia_head["test_ids"]),
                         allow_overlap=True)
    assert res.overlap["map_anchors_scored"] == 40 and res.overlap["rows_in_head_training"] == 50
    assert any("40 of 110 rows are anchors of map" in n and "no label leaked" in n for n in res.notes)


def test_benchmark_with_a_head_route_applies_the_same_check(lite2_store: Path, pneumonia_head: dict[str, Path],
                                                            tmp_path: Path) -> None:
    from stitchkit.zeroshot.benchmark import BenchmarkOptions, Route, load_suite, run_suite

    (tmp_path / "test.ids").write_text(pneumonia_head["test_ids"].read_text())
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: overlap\ndatasets:\n"
                     "  - {name: all, store: k, task: multiclass, prompts: pneumonia}\n"
                     "  - {name: held-out, store: k, task: multiclass, prompts: pneumonia, ids: test.ids}\n")
    route = Route(text_model="minilm", head_path=str(pneumonia_head["head"]))
    with pytest.raises(OverlapError, match="data set all: 120 of 180 rows trained head .*the entry's ids or where"):
        run_suite(load_suite(suite), {"k": str(lite2_store)}, route, tmp_path / "refused",
                  BenchmarkOptions(bootstrap=0))
    data = run_suite(load_suite(suite), {"k": str(lite2_store)}, route, tmp_path / "out",
                     BenchmarkOptions(bootstrap=0, datasets=["held-out"]))
    assert data["datasets"][0]["overlap"]["rows_in_head_training"] == 0
