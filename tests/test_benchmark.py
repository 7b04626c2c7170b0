"""`stitch benchmark`: suites of zero-shot data sets, measured per finding, on real stores.

The stores are the session's Lite2 embeddings of 180 real Kermany images (tests/conftest.py),
rewritten with the columns the dataset readers write: labels as findings joined by "|" (from
Kermany's own subtype column: "pneumonia|bacteria", "pneumonia|virus", "normal"), the patient
as group, the split, and an ``uncertain`` column (set here on every fourth train image, for
"virus", to check that those rows leave that finding's AUC only; the fixture's 60 test images
are normal or bacterial, so the subtype entry reads the 120 train images). Scoring is cosine through a
ridge map from Lite2 into MiniLM's text space, fitted on the train images' label captions: a
label-supervised route, which is what a test of the plumbing needs.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from stitchkit.store import EmbeddingStore, write_store
from stitchkit.zeroshot.benchmark import (
    BenchmarkOptions,
    EntryScores,
    Route,
    SuiteError,
    _interval,
    bootstrap_draws,
    load_suite,
    parse_suite,
    run_suite,
)
from stitchkit.zeroshot.metrics import group_codes, nanmean
from stitchkit.zeroshot.score_writer import read_scores
from tests.faults.helpers import run_inprocess

ROOT = Path(__file__).resolve().parents[1]
SUITE = {
    "name": "kermany-suite",
    "datasets": [
        {"name": "subtypes", "store": "k", "task": "multilabel", "prompts": "pneumonia-subtypes",
         "findings": "auto", "min_positives": 3, "where": {"split": "train"}},
        {"name": "pneumonia", "store": "k", "task": "multiclass", "prompts": "pneumonia",
         "findings": ["normal", "pneumonia"], "where": {"split": "test"}},
        {"name": "within-pneumonia", "store": "k", "task": "multilabel", "prompts": "pneumonia-subtypes",
         "findings": ["bacterial_pneumonia", "viral_pneumonia"], "within": ["pneumonia"],
         "groups": {"rule": "positives", "common": 20, "rare": 0}},
    ],
}


def _patient(image_id: str) -> str:
    name = Path(image_id).stem  # person1_bacteria_1, IM-0115-0001, NORMAL2-IM-0352-0001
    return name.split("_")[0] if name.startswith("person") else name.rsplit("-", 1)[0]


@pytest.fixture(scope="module")
def world(lite2_store: Path, data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from stitchkit.maps import AnchorPlan, fit_map
    from stitchkit.zeroshot.captions import CaptionSource, make_captions
    from stitchkit.zeroshot.prompts import load_prompts

    d = tmp_path_factory.mktemp("benchmark")
    with open(data / "kermany-pneumonia-224" / "labels.csv", newline="") as fh:
        subtype = {r["path"]: r["subtype"] for r in csv.DictReader(fh)}
    with EmbeddingStore(lite2_store) as s:
        ids, emb, attrs = [str(i) for i in s.ids], s.read(), s.attrs
    labels = ["normal" if subtype[i] == "normal" else f"pneumonia|{subtype[i]}" for i in ids]
    train_rows = [k for k, i in enumerate(ids) if i.startswith("train/")]
    unsure = {k for n, k in enumerate(train_rows) if n % 4 == 0}
    columns = {"labels": labels, "groups": [_patient(i) for i in ids], "split": [i.split("/")[0] for i in ids],
               "uncertain": ["virus" if k in unsure else "" for k in range(len(ids))]}
    attrs = {k: v for k, v in attrs.items() if k not in ("complete", "dim", "format", "format_version")}
    store = write_store(d / "k-rich.h5", ids, emb, attrs=attrs, columns=columns)
    captions = d / "captions.h5"
    make_captions(lite2_store, out=captions, text_model="minilm",
                  source=CaptionSource(prompts=load_prompts("pneumonia")))
    train = [i for i in ids if i.startswith("train/")]
    fit_map(lite2_store, captions, "ridge", plan=AnchorPlan(anchors=train)).save(d / "l2-minilm.map")
    (d / "suite.yaml").write_text(json.dumps(SUITE))  # JSON is YAML
    return {"dir": d, "store": store, "map": d / "l2-minilm.map", "ids": ids, "labels": labels,
            "uncertain": columns["uncertain"], "suite": d / "suite.yaml"}


@pytest.fixture(scope="module")
def ran(world: dict) -> dict:
    route = Route(text_model="minilm", map_path=str(world["map"]), scoring="cosine")
    out = world["dir"] / "out"
    data = run_suite(load_suite(world["suite"]), {"k": str(world["store"])}, route, out,
                     BenchmarkOptions(bootstrap=200, seed=3))
    return {"data": data, "out": out, "by": {d["name"]: d for d in data["datasets"]}}


def _truth(world: dict, ids: list[str], part: str) -> np.ndarray:
    label = dict(zip(world["ids"], world["labels"], strict=True))
    return np.array([part in label[i].split("|") for i in ids])


@pytest.mark.slow
def test_where_selects_exactly_those_rows_and_aucs_are_sklearns(world: dict, ran: dict) -> None:
    entry = ran["by"]["subtypes"]
    sf = read_scores(entry["scores"])
    assert sorted(sf.ids) == sorted(i for i in world["ids"] if i.startswith("train/"))
    m = entry["metrics"]
    assert m["n"] == 120 and entry["findings"] == ["normal", "bacterial_pneumonia", "viral_pneumonia"]
    unsure = dict(zip(world["ids"], world["uncertain"], strict=True))
    dropped = np.array([unsure[i] == "virus" for i in sf.ids])
    assert dropped.sum() == 30
    for c, (finding, part) in enumerate(zip(entry["findings"], ["normal", "bacteria", "virus"], strict=True)):
        y = _truth(world, sf.ids, part)
        keep = ~dropped if part == "virus" else np.ones(len(y), dtype=bool)  # uncertain: that finding only
        assert m["n_rows"][finding] == keep.sum() and m["positives"][finding] == y[keep].sum()
        assert m["auc"][finding] == pytest.approx(roc_auc_score(y[keep], sf.ranking[keep, c]), abs=1e-12)
    assert m["uncertain"] == {"normal": 0, "bacterial_pneumonia": 0, "viral_pneumonia": 30}
    assert m["auc_macro"] == pytest.approx(np.mean(list(m["auc"].values())), abs=1e-12)


@pytest.mark.slow
def test_macro_interval_comes_from_the_same_resamples_as_the_findings(world: dict, ran: dict) -> None:
    entry = ran["by"]["subtypes"]
    sf = read_scores(entry["scores"])
    unsure = dict(zip(world["ids"], world["uncertain"], strict=True))
    truth = np.stack([_truth(world, sf.ids, p) for p in ("normal", "bacteria", "virus")], axis=1)
    valid = np.ones_like(truth)
    valid[:, 2] = [unsure[i] != "virus" for i in sf.ids]
    patients = group_codes([_patient(i) for i in sf.ids])  # the store's groups column, as run_entry reads it
    draws = bootstrap_draws(EntryScores(truth, valid, sf.ranking, sf.probabilities, "multilabel", patients), 200, 3)
    assert len(draws.parts) == 1 and draws.parts[0][0].shape == (200, 3)  # 120 images: the ordinary bootstrap
    every = draws.parts[0][0]  # (resamples, findings): one draw of images, every finding's AUC under it
    ci = entry["metrics"]["ci"]
    assert ci["auc_macro"] == pytest.approx(_interval(nanmean(every, axis=1)))
    for c, finding in enumerate(entry["findings"]):
        assert ci["auc"][finding] == pytest.approx(_interval(every[:, c]))
    assert "same resamples for every finding" in ci["method"] and "each group's images drawn together" in ci["method"]
    assert ci["unit"] == "group" and ci["n_groups"] == len(set(patients)) < 120


@pytest.mark.slow
def test_intervals_resample_patients_and_say_so_in_the_json_the_records_and_the_table(world: dict, ran: dict) -> None:
    """The world store's groups column holds Kermany's patients: every data set resamples them,
    and benchmark.json, records.json and table.md carry the unit and the number of patients."""
    saved = json.loads((ran["out"] / "benchmark.json").read_text(encoding="utf-8"))
    patient = {i: _patient(i) for i in world["ids"]}
    for d in saved["datasets"]:
        ids = read_scores(d["scores"]).ids
        n_patients = len({patient[i] for i in ids})
        assert d["metrics"]["ci"]["unit"] == "group" and d["metrics"]["ci"]["n_groups"] == n_patients < len(ids)
        assert saved["bootstrap"]["units"][d["name"]] == {"unit": "group", "n_groups": n_patients}
        row = next(line for line in saved["markdown"].splitlines() if line.startswith(f"| {d['name']} |"))
        assert f"| {d['metrics']['n']} | {n_patients} |" in row  # n images, then n groups
    assert saved["bootstrap"]["unit"] == "group" and "resampling whole groups" in saved["markdown"]
    records = json.loads((ran["out"] / "records.json").read_text(encoding="utf-8"))
    assert {(r["metrics"]["ci_unit"], r["metrics"]["ci_n_groups"] > 0) for r in records} == {("group", True)}


def test_one_image_per_group_is_the_image_bootstrap_and_duplicates_widen_only_the_image_one() -> None:
    """Benchmark draws: groups of one image give the image bootstrap draw for draw (both the
    ordinary bootstrap and the little ones); every image copied four times narrows the image
    bootstrap by about half but leaves the patient bootstrap exactly as it was (the copies of
    an image are one patient, and AUC does not see weights scaled alike)."""
    rng = np.random.default_rng(5)
    for n in (400, 6000):
        truth = rng.random((n, 2)) < [0.3, 0.1]
        ranking = truth + rng.normal(size=(n, 2))
        valid = np.ones_like(truth)
        plain = bootstrap_draws(EntryScores(truth, valid, ranking, ranking, "multilabel"), 100, 1)
        single = bootstrap_draws(EntryScores(truth, valid, ranking, ranking, "multilabel", np.arange(n)), 100, 1)
        assert plain.unit == {"unit": "image", "n_groups": None} and single.unit == {"unit": "group", "n_groups": n}
        for (a, own_a), (b, own_b) in zip(plain.parts, single.parts, strict=True):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(own_a, own_b)
    n = 300
    truth = rng.random((n, 2)) < [0.3, 0.1]
    ranking = truth + rng.normal(size=(n, 2))
    dup = np.repeat(np.arange(n), 4)  # 1,200 images, four of each patient

    def width(scores: EntryScores) -> float:
        point = nanmean([roc_auc_score(scores.truth[:, c], scores.ranking[:, c]) for c in range(2)])
        lo, hi = bootstrap_draws(scores, 400, 2).interval(lambda a: nanmean(a, axis=1), point)
        return hi - lo

    alone = width(EntryScores(truth, np.ones_like(truth), ranking, ranking, "multilabel", np.arange(n)))
    copies = EntryScores(truth[dup], np.ones((4 * n, 2), bool), ranking[dup], ranking[dup], "multilabel")
    by_image, by_patient = width(copies), width(replace(copies, clusters=dup))
    assert by_patient == pytest.approx(alone, abs=1e-12)  # the same 300 patients, the same draws
    assert 0.4 < by_image / by_patient < 0.65  # images as if independent: about 1 / sqrt(4)


@pytest.mark.slow
def test_a_store_without_groups_resamples_images_and_classify_records_the_unit(world: dict, tmp_path: Path) -> None:
    """The same rows without a groups column: benchmark and `stitch classify` resample images
    and say so; with it, classify resamples the patients and its record says how many."""
    from stitchkit.results import to_record
    from stitchkit.zeroshot.prompts import load_prompts
    from stitchkit.zeroshot.scoring import classify_store
    with EmbeddingStore(world["store"]) as s:
        attrs = {k: v for k, v in s.attrs.items() if k not in ("complete", "dim", "format", "format_version")}
        columns = {c: list(s.column(c)) for c in ("labels", "split", "uncertain")}
        bare = write_store(tmp_path / "no-groups.h5", [str(i) for i in s.ids], s.read(), attrs=attrs, columns=columns)
    route = Route(text_model="minilm", map_path=str(world["map"]), scoring="cosine")
    data = run_suite(load_suite(world["suite"]), {"k": str(bare)}, route, tmp_path / "out",
                     BenchmarkOptions(bootstrap=50, seed=3, datasets=["pneumonia"]))
    ci = data["datasets"][0]["metrics"]["ci"]
    assert ci["unit"] == "image" and ci["n_groups"] is None and data["bootstrap"]["unit"] == "image"
    assert "n groups" not in data["markdown"] and "resampling images one by one" in data["markdown"]
    test_ids = [i for i in world["ids"] if i.startswith("test/")]
    for store, unit, n_groups in ((bare, "image", None),
                                  (world["store"], "group", len({_patient(i) for i in test_ids}))):
        result = classify_store(str(store), load_prompts("pneumonia"), text_model="minilm", map_path=str(world["map"]),
                                scoring="cosine", ids=test_ids, bootstrap=100)
        assert result.metrics["ci"]["unit"] == unit and result.metrics["ci"]["n_groups"] == n_groups
        flat = to_record("classify", result.to_dict())["metrics"]
        assert flat["ci_unit"] == unit and flat["ci_n_groups"] == n_groups
        if unit == "image":  # the point estimates do not depend on the unit
            point = result.metrics["auc_macro"]
        else:
            assert result.metrics["auc_macro"] == point


def test_large_sets_take_the_bag_of_little_bootstraps_with_findings_sharing_draws() -> None:
    rng = np.random.default_rng(0)
    n = 12_000
    truth = rng.random((n, 3)) < [0.3, 0.1, 0.02]
    ranking = truth + rng.normal(size=(n, 3))
    valid = rng.random((n, 3)) > 0.05
    draws = bootstrap_draws(EntryScores(truth, valid, ranking, ranking, "multilabel"), 100, 0)
    assert len(draws.parts) == 10 and draws.n_boot == 100 and "bag of little bootstraps" in draws.method
    point = nanmean([roc_auc_score(truth[valid[:, c], c], ranking[valid[:, c], c]) for c in range(3)])
    lo, hi = draws.interval(lambda a: nanmean(a, axis=1), point)
    assert lo < point < hi and hi - lo < 0.05


@pytest.mark.slow
def test_multiclass_accuracy_and_within_and_groups(world: dict, ran: dict) -> None:
    entry = ran["by"]["pneumonia"]
    sf = read_scores(entry["scores"])
    y = _truth(world, sf.ids, "pneumonia")
    m = entry["metrics"]
    assert m["accuracy"] == pytest.approx(np.mean(sf.probabilities.argmax(1) == y))
    assert m["auc"]["pneumonia"] == pytest.approx(roc_auc_score(y, sf.ranking[:, 1]), abs=1e-12)
    assert m["ci"]["accuracy"][0] <= m["ci"]["accuracy"][1]
    within = ran["by"]["within-pneumonia"]
    rows = read_scores(within["scores"]).ids
    assert set(rows) == {i for i, lab in zip(world["ids"], world["labels"], strict=True) if "pneumonia" in lab}
    groups = within["metrics"]["groups"]
    pos = within["metrics"]["positives"]
    assert {f for g in groups.values() for f in g["findings"]} == set(within["findings"])
    assert all(pos[f] >= 20 for f in groups["common"]["findings"])
    assert all(pos[f] < 20 for f in groups["rare"]["findings"])


@pytest.mark.slow
def test_the_table_row_matches_the_json(ran: dict) -> None:
    table = (ran["out"] / "table.md").read_text(encoding="utf-8")
    assert "Composition: lite2" in table and "l2-minilm.map" in table and "cosine" in table
    header = next(line for line in table.splitlines() if line.startswith("| dataset | macro AUC"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    saved = json.loads((ran["out"] / "benchmark.json").read_text(encoding="utf-8"))
    assert saved["schema"] == "stitchkit.benchmark/1" and saved["markdown"] == table
    for d in saved["datasets"]:
        m = d["metrics"]
        row = next(line for line in table.splitlines() if line.startswith(f"| {d['name']} |"))
        cells = dict(zip(columns, [c.strip() for c in row.strip("|").split("|")], strict=True))
        lo, hi = m["ci"]["auc_macro"]
        assert cells["macro AUC [95 % CI]"] == f"{m['auc_macro']:.3f} [{lo:.3f}, {hi:.3f}]"
        assert cells["n images"] == str(m["n"]) and cells["n findings"] == str(len(d["findings"]))
        for f in d["findings"]:
            assert cells[f] == f"{m['auc'][f]:.3f}"
    assert re.search(r"\| within-pneumonia \| common \| \d\.\d{3} \[", table)


@pytest.mark.slow
def test_stitch_results_reads_the_records_and_a_rerun_replaces_them(world: dict, ran: dict) -> None:
    res = run_inprocess("results", ran["out"] / "records.json", "--columns", "dataset,auc_macro,n", "--digits", "6")
    assert res.code == 0, res.stderr
    for d in ran["data"]["datasets"]:
        assert f"| {d['name']} | {d['metrics']['auc_macro']:.6f} | {d['metrics']['n']} |" in res.stdout
    res = run_inprocess("benchmark", world["suite"], "--store", f"k={world['store']}", "--dataset", "pneumonia",
                        "--map", world["map"], "--scoring", "cosine", "-t", "minilm", "-o", ran["out"],
                        "--bootstrap", "50")
    assert res.code == 0, res.stderr
    records = json.loads((ran["out"] / "records.json").read_text(encoding="utf-8"))
    assert sorted(r["dataset"] for r in records) == ["pneumonia", "subtypes", "within-pneumonia"]
    assert "| pneumonia |" in res.stdout and "records.json" in res.stdout


@pytest.mark.slow
def test_report_draws_the_benchmark(ran: dict, tmp_path: Path) -> None:
    res = run_inprocess("report", ran["out"], "-o", tmp_path / "rep")
    assert res.code == 0, res.stderr
    assert (tmp_path / "rep" / "benchmark-00.png").is_file()
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    assert "## Zero-shot benchmark: kermany-suite" in md and "| subtypes |" in md


def test_a_bad_suite_key_is_one_line_with_exit_2(tmp_path: Path) -> None:
    bad = {**SUITE, "datasets": [{**SUITE["datasets"][0], "finding": ["normal"]}]}
    (tmp_path / "bad.yaml").write_text(json.dumps(bad))
    res = run_inprocess("benchmark", tmp_path / "bad.yaml", "--store", "k=k.h5", "-o", tmp_path / "out")
    assert res.code == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "unknown key 'finding'" in res.stderr and "did you mean 'findings'?" in res.stderr
    with pytest.raises(SuiteError, match="unknown key 'dataset' .did you mean 'datasets'"):
        parse_suite({"dataset": []}, source="s.yaml")


def test_a_missing_store_is_one_line_with_exit_2(lite2_store: Path, tmp_path: Path) -> None:
    res = run_inprocess("benchmark", "demo", "--store", f"kermany={lite2_store}", "-o", tmp_path / "out")
    assert res.code == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "needs --store nih=FILE.h5" in res.stderr and "--dataset" in res.stderr
    res = run_inprocess("benchmark", "demo", "--store", "kermany=k.h5", "--store", "nhi=n.h5", "-o", tmp_path / "o")
    assert res.code == 2 and "reads no store named nhi" in res.stderr


def test_the_truth_table_is_prompt_class_matching() -> None:
    from stitchkit.zeroshot.benchmark import truth_table
    from stitchkit.zeroshot.prompts import load_prompts

    classes = load_prompts("cxr14").classes + load_prompts("pneumonia").classes
    values = np.array(["No Finding", "Edema|Effusion|Pneumonia", " pleural_effusion | Mass", "no_finding",
                       "", "Infiltrate", "Pleural_Thickening|Hernia", "virus|COVID-19"], dtype=object)
    expected = np.array([[c.matches(v) for c in classes] for v in values])
    assert (truth_table(values, classes) == expected).all() and expected.sum() > 8


@pytest.mark.parametrize("name", ["papers", "demo"])
def test_the_shipped_suites_load_and_name_classes_of_their_prompts(name: str) -> None:
    from stitchkit.zeroshot.benchmark import _resolve_class, counterpart
    from stitchkit.zeroshot.prompts import load_prompts

    suite = load_suite(name)
    for entry in suite.entries:
        sets = [load_prompts(spec) for spec in entry.prompt_specs().values()]
        for finding in entry.findings or []:
            for prompts in sets:
                _resolve_class(prompts, finding, entry)
        for prompts in sets[1:]:  # every set scores each finding the first set can
            assert all(counterpart(prompts, c) is not None for c in sets[0].classes)
    assert Path(suite.source).parent == ROOT / "anchors" / "suites"


def test_suite_values_are_checked(tmp_path: Path) -> None:
    entry = SUITE["datasets"][0]
    for change, message in [({"task": "both"}, "task must be one of"), ({"min_positives": 0}, "min_positives"),
                            ({"findings": ["normal"], "task": "multiclass"}, "at least two findings"),
                            ({"groups": {"rule": "often"}}, "rule must be 'positives'"),
                            ({"store": ""}, "needs store"),
                            ({"findings": ["normal"], "groups": {"a": ["normal", "virus"]}}, "groups name virus")]:
        with pytest.raises(SuiteError, match=message):
            parse_suite({"datasets": [{**entry, **change}]}, source="s.yaml")
    with pytest.raises(SuiteError, match="shipped suites: demo, papers"):
        load_suite(tmp_path / "nowhere.yaml")


@pytest.mark.slow
def test_adapt_applies_per_store_before_the_text_map(world: dict, ran: dict) -> None:
    from stitchkit.maps.adapt import fit_adaptation

    adapt = world["dir"] / "k.adapt.map"
    fit_adaptation(world["store"], dims=4.0).save(adapt)
    route = Route(text_model="minilm", map_path=str(world["map"]), scoring="cosine", adapt={"k": str(adapt)})
    data = run_suite(load_suite(world["suite"]), {"k": str(world["store"])}, route, world["dir"] / "adapted",
                     BenchmarkOptions(bootstrap=200, seed=3, control=ran["out"]))
    entry = data["datasets"][0]
    assert entry["composition"]["adapt"]["applied"] == "before the map"
    assert data["composition"]["adapt"] == {"k": str(adapt)}
    m, control = entry["metrics"], ran["by"][entry["name"]]["metrics"]
    assert m["auc_macro"] != control["auc_macro"]
    # --control: the unadapted run, paired on the same images, in the metrics and the table.
    assert m["control_auc_macro"] == pytest.approx(control["auc_macro"], abs=1e-9)
    assert m["delta_auc_macro"] == pytest.approx(m["auc_macro"] - control["auc_macro"], abs=1e-9)
    assert m["delta_auc_macro_ci_low"] <= m["delta_auc_macro"] <= m["delta_auc_macro_ci_high"]
    assert "Δ vs control" in (world["dir"] / "adapted" / "table.md").read_text()


def test_adapt_for_a_store_the_suite_does_not_read_is_one_line(tmp_path: Path) -> None:
    res = run_inprocess("benchmark", "demo", "--store", "kermany=k.h5", "--dataset", "kermany",
                        "--adapt", "chexpert=c.map", "-o", tmp_path / "out")
    assert res.code == 2 and "--adapt chexpert=...: suite demo reads no store named chexpert" in res.stderr


def test_prompt_sets_are_a_name_a_list_or_a_mapping() -> None:
    entry = {"name": "n", "store": "s", "task": "multilabel", "findings": "auto"}
    one = parse_suite({"datasets": [{**entry, "prompts": "cxr14"}]}, source="s.yaml").entries[0]
    assert one.prompts == "cxr14" and one.prompt_specs() == {"cxr14": "cxr14"}
    listed = parse_suite({"datasets": [{**entry, "prompts": ["cxr14", "p/mine.yaml"]}]}, source="s.yaml").entries[0]
    assert listed.prompts == "cxr14" and listed.prompt_specs() == {"cxr14": "cxr14", "mine": "p/mine.yaml"}
    named = parse_suite({"datasets": [{**entry, "prompts": {"b": "x.yaml", "a": "cxr14"}}]}, source="s.yaml").entries[0]
    assert named.prompts == "x.yaml" and list(named.prompt_specs()) == ["b", "a"]
    for bad, message in [(["cxr14", "a/cxr14.yaml"], "repeated: cxr14"), ([], "needs prompts"),
                         ({"a": 3}, "prompts must be a prompt set")]:
        with pytest.raises(SuiteError, match=message):
            parse_suite({"datasets": [{**entry, "prompts": bad}]}, source="s.yaml")


def test_every_bad_data_set_of_a_suite_is_named_at_once() -> None:
    entry = {"name": "n", "store": "s", "task": "multilabel", "prompts": "cxr14"}
    with pytest.raises(SuiteError) as caught:
        parse_suite({"datasets": [{**entry, "task": "both"}, {**entry, "name": "m", "finding": ["x"]}]}, source="s.yaml")
    lines = str(caught.value).splitlines()
    assert lines[0] == "s.yaml: 2 problems, nothing was scored:"
    assert "dataset 'n': task must be one of" in lines[1] and "dataset 'm': unknown key 'finding'" in lines[2]


def test_the_whole_suite_is_checked_before_anything_is_scored(lite2_store: Path, tmp_path: Path) -> None:
    """Every problem of every data set, one line each, exit 2, and nothing scored or written:
    an ids file that is nowhere, a column ``where`` selects on that the store lacks, a listed
    finding no selected row carries, a prompt set without a class for a finding, a store that
    does not exist, a --store name the suite does not read."""
    (tmp_path / "plain.yaml").write_text(json.dumps({"mode": "multiclass", "classes": {
        "normal": {"labels": ["normal"], "positive": ["clear lungs"]}}}))
    suite = {"name": "checked", "datasets": [
        {"name": "by-ids", "store": "k", "task": "multiclass", "prompts": "pneumonia",
         "findings": ["normal", "pneumonia"], "ids": "manifests/test-ids.txt"},
        {"name": "by-split", "store": "k", "task": "multiclass", "prompts": ["pneumonia", "plain.yaml"],
         "findings": ["normal", "pneumonia"], "where": {"split": "test"}},
        {"name": "absent", "store": "k", "task": "multilabel", "prompts": "cxr14", "findings": ["Edema"]},
        {"name": "elsewhere", "store": "other", "task": "multilabel", "prompts": "cxr14"},
    ]}
    (tmp_path / "suite.yaml").write_text(json.dumps(suite))
    res = run_inprocess("benchmark", tmp_path / "suite.yaml", "--store", f"k={lite2_store}",
                        "--store", f"other={tmp_path / 'nowhere.h5'}", "--store", "extra=x.h5", "-o", tmp_path / "out")
    assert res.code == 2 and "Traceback" not in res.stderr, res.stderr
    lines = res.message_lines
    assert lines[0].startswith("error: suite checked (") and lines[0].endswith("6 problems, nothing was scored:")
    expected = ["--store extra=...: suite checked reads no store named extra",
                "store other: ", "nowhere.h5: no such file",
                "dataset by-ids: ids manifests/test-ids.txt: no such file beside the suite",
                "dataset by-split: prompts plain (", "have no class for pneumonia",
                "dataset by-split: where split=test, but store", "has no column 'split'",
                "dataset absent: no row among the 180 selected (all rows) carries Edema"]
    assert all(any(e in line for line in lines[1:]) for e in expected), lines
    assert len(lines) == 7 and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_each_prompt_set_is_scored_and_the_spread_is_max_minus_min(world: dict) -> None:
    (world["dir"] / "plain.yaml").write_text(json.dumps({"mode": "multiclass", "classes": {
        "normal": {"labels": ["normal"], "positive": ["normal chest x-ray"]},
        "pneumonia": {"labels": ["pneumonia"], "positive": ["pneumonia", "lung infection"]}}}))
    suite = {"name": "prompted", "datasets": [
        {"name": "pneumonia", "store": "k", "task": "multiclass", "prompts": {"carzero": "pneumonia", "plain": "plain.yaml"},
         "findings": ["normal", "pneumonia"], "where": {"split": "test"}}]}
    (world["dir"] / "prompted.yaml").write_text(json.dumps(suite))
    route = Route(text_model="minilm", map_path=str(world["map"]), scoring="cosine")
    out = world["dir"] / "prompted"
    data = run_suite(load_suite(world["dir"] / "prompted.yaml"), {"k": str(world["store"])}, route, out,
                     BenchmarkOptions(bootstrap=100, seed=1))
    d = data["datasets"][0]
    assert list(d["prompt_sets"]) == ["carzero", "plain"] and d["prompt_sets"]["carzero"]["metrics"] == d["metrics"]
    macro = {}
    for name, run in d["prompt_sets"].items():
        sf = read_scores(run["scores"])
        y = _truth(world, sf.ids, "pneumonia")
        assert run["metrics"]["auc"]["pneumonia"] == pytest.approx(roc_auc_score(y, sf.ranking[:, 1]), abs=1e-12)
        macro[name] = run["metrics"]["auc_macro"]
    assert macro["carzero"] != macro["plain"]
    assert Path(d["prompt_sets"]["plain"]["scores"]).name == "pneumonia.plain.h5"
    spread = d["prompt_spread"]
    assert spread["auc_macro"] == pytest.approx(abs(macro["carzero"] - macro["plain"]), abs=1e-12)
    assert spread["highest"] == max(macro, key=macro.get) and "accuracy" in spread
    table = (out / "table.md").read_text(encoding="utf-8")
    assert f"| pneumonia | plain | {macro['plain']:.3f} [" in table
    assert f"| pneumonia | spread (max − min) | {spread['auc_macro']:.3f} |" in table
    record = json.loads((out / "records.json").read_text(encoding="utf-8"))[0]
    assert record["metrics"]["auc_macro_prompts_plain"] == pytest.approx(macro["plain"])
    assert record["metrics"]["auc_macro_spread"] == pytest.approx(spread["auc_macro"])
