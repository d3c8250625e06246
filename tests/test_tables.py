"""studies.tables' study kinds on tiny folders (naive references: the cells are the files' numbers)."""

import json

import pandas as pd
import pytest

from pds import stats
from studies import tables


def _metrics(n_pairs, values, protocols=("field",)):
    """metrics.json with r_mean `values[method][encoder]` (sd 0.5, 3 seeds) under each protocol."""
    tree = {"dataset": "w", "n_pairs": n_pairs, "seeds": 3}
    for p in protocols:
        for m, encs in values.items():
            for e, v in encs.items():
                entry = {k: 0.0 for k in ("IR@1", "IR@5", "IR@10", "TR@1", "TR@5", "TR@10")}
                entry.update(r_mean=v, sd=0.5, n=3, epochs=10, test_selected=dict(entry, r_mean=v, sd=0.5, n=3))
                tree.setdefault(p, {}).setdefault(m, {})[e] = entry
    return tree


def test_budget_lists_each_students_r_mean_at_each_budget(tmp_path):
    for m, pds in ((100, 1.0), (500, 3.0)):
        (tmp_path / f"metrics_{m}.json").write_text(json.dumps(_metrics(m, {
            "pds": {"convnet": pds, "resnet": pds + 0.25}, "random": {"convnet": 2.0, "resnet": 4.0}})))
    out = tables.budget(tmp_path, "field")
    assert "| pds | 1.0 / 1.2 | 3.0 / 3.2 |" in out and "| random | 2.0 / 4.0 | 2.0 / 4.0 |" in out
    with pytest.raises(ValueError, match="paper"):
        tables.budget(tmp_path, "paper")


def test_ablations_put_each_variant_in_its_cell(tmp_path):
    (tmp_path / "sweep").mkdir()  # the realistic world's layout: metrics in sweep/, ablations beside it
    (tmp_path / "sweep" / "metrics_100.json").write_text(json.dumps(_metrics(100, {
        "pds": {"convnet": 1.0, "vit": 1.5}, "random": {"convnet": 2.0, "vit": 2.5}})))
    (tmp_path / "ablations_100").mkdir()
    (tmp_path / "ablations_100" / "pds_real__text_prototype.json").write_text(json.dumps(_metrics(100, {
        "pds_real": {"convnet": 3.0, "vit": 3.5}})))
    (tmp_path / "ablations_100" / "pds_and_pds_real__text_caption.json").write_text(json.dumps(_metrics(100, {
        "pds": {"convnet": 4.0, "vit": 4.5}, "pds_real": {"convnet": 5.0, "vit": 5.5}})))
    out = tables.ablations(tmp_path, "field")
    assert "| 100 | synthetic (decoded) | 1.0 / 1.5 | 4.0 / 4.5 |" in out
    assert "| 100 | real (nearest training image) | 3.0 / 3.5 | 5.0 / 5.5 |" in out
    assert "| 100 | random real pairs, for reference | 2.0 / 2.5 |  |" in out
    with pytest.raises(ValueError, match="paper"):
        tables.ablations(tmp_path, "paper")
    with pytest.raises(ValueError, match="no ablations_<M>/ folder"):
        tables.ablations(tmp_path / "sweep", "field")


def test_mismatch_and_filter_read_each_rate(tmp_path):
    for r, v in (("0", 5.0), ("0.2", 4.0)):
        (tmp_path / f"p{r}").mkdir()
        (tmp_path / f"p{r}" / "metrics.json").write_text(json.dumps(_metrics(100, {"pds": {"convnet": v}},
                                                                              ("field", "paper"))))
        (tmp_path / f"p{r}" / "filter.json").write_text(json.dumps(
            {"filter_recall": 0.9, "mismatched_kept": 0.01, "mismatched_members": 0.004, "members": 1234}))
    out = tables.mismatch(tmp_path)
    assert "| method | field p = 0 | paper p = 0 | field p = 0.2 | paper p = 0.2 |" in out
    assert "| pds | 5.0 ± 0.5 | 5.0 ± 0.5 | 4.0 ± 0.5 | 4.0 ± 0.5 |" in out
    f = tables.filter_table(tmp_path)
    assert "| 0.2 | 90.0 % | 1.0 % | 0.4 % | 1,234 |" in f and "| 0 |" not in f  # p = 0 has nothing to filter


def test_seeds_prints_both_intervals(tmp_path):
    pd.DataFrame([{"a": "pds", "b": "random", "protocol": "field", "image_encoder": "vit", "diff": 1.25,
                   "ci_low": -0.5, "ci_high": 3.0, "p": 0.2, "one_set_ci_low": 0.5, "one_set_ci_high": 2.0,
                   "one_set_p": 0.004}]).to_csv(tmp_path / "comparisons.csv", index=False)
    assert "| pds − random | field | vit | +1.2 | [−0.5, +3.0] | 0.20 | [+0.5, +2.0] | 4e-03 |" in tables.seeds(tmp_path)


def test_an_unknown_kind_names_the_kinds():
    with pytest.raises(ValueError, match="budget, ablations, mismatch, filter, seeds"):
        tables.render("nonsense results/evaluate")


def _runs(method, values, **extra):
    """runs.csv rows: one epoch per student, val = test = the value (field protocol, ConvNet)."""
    rows = []
    for seed, v in enumerate(values):
        for split in ("val", "test"):
            rows.append({"protocol": "field", "method": method, "image_encoder": "convnet", "seed": seed,
                         "n_train": 100, "epochs": 1, "epoch": 0, "split": split, "loss": 0.0, "seconds": 0.0,
                         **{k: 0.0 for k in ("IR@1", "IR@5", "IR@10", "TR@1", "TR@5", "TR@10")}, "r_mean": v,
                         **extra})
    return rows


def test_curve_and_chosen_read_the_tm_curve_files(tmp_path):
    study, ref = tmp_path / "study", tmp_path / "ref"
    study.mkdir()
    ref.mkdir()
    pd.DataFrame([{"set": "tm_lr1000", "method": "tm", "lr_img": 1000.0, "iterations": k, "val": v, "test": v + 1}
                  for k, v in ((0, 1.0), (150, 3.0))]).to_csv(study / "curve.csv", index=False)
    (study / "choice.json").write_text(json.dumps({"chosen": {"tm": {"lr_img": 1000.0, "iterations": 150, "val": 3.0}}}))
    out = tables.curve(study)
    assert "| tm (MTT-VL), pixel lr 1000 | 1.0 / 2.0 | **3.0 / 4.0** |" in out
    pd.DataFrame(_runs("tm", [9.0, 9.0, 9.0], set="tm_lr1000", iterations=0)  # not chosen: left out
                 + _runs("tm", [5.0, 6.0, 7.0], set="tm_lr1000", iterations=150)).to_csv(study / "runs.csv", index=False)
    pd.DataFrame(_runs("random", [2.0, 3.0, 4.0]) + _runs("pds", [1.0, 1.0, 2.0])).to_csv(ref / "runs.csv", index=False)
    got = tables.chosen(study, ref, "random")
    assert "| tm − random | field | convnet | 6.0 | +3.0 |" in got and "pds" not in got


def test_chosen_against_a_metrics_file_agrees_with_the_same_test_on_the_runs():
    """A budget sweep keeps its runs in a DVC-cached work folder, so its metrics file is the reference there; on the
    realistic world's M = 100 run, where both are committed, the two routes agree up to metrics.json's rounding."""
    from pds.paths import ROOT

    study, world = ROOT / "results" / "tm_curve" / "toyflickr", ROOT / "results" / "worlds" / "toyflickr"
    runs = tables.chosen_comparison(study, world, "random,pds").set_index(["a", "b", "protocol", "image_encoder"])
    summ = tables.chosen_comparison(study, world / "metrics.json", "random,pds")
    summ = summ.set_index(["a", "b", "protocol", "image_encoder"])
    assert len(summ) == len(runs) == 24 and list(summ.index) == list(runs.index)
    for col in ("diff", "ci_low", "ci_high"):
        assert (summ[col] - runs[col]).abs().max() < 0.05, col
    assert ((summ["p"] < 0.05) == (runs["p"] < 0.05)).all()
    with pytest.raises(ValueError, match="at M = 100 but .*metrics_500.json at M = 500"):
        tables.chosen_comparison(study, world / "sweep" / "metrics_500.json", "random")


def test_sets_compares_the_set_means_of_several_distillations_with_the_baselines_students(tmp_path):
    ref = tmp_path / "ref"
    ref.mkdir()
    pd.DataFrame(_runs("random", [2.0, 3.0, 4.0])).to_csv(ref / "runs.csv", index=False)
    folders = []
    for k, students in enumerate(([5.0, 6.0, 7.0], [7.0, 8.0, 9.0], [9.0, 9.0, 12.0])):
        f = tmp_path / f"s{k}"
        f.mkdir()
        (f / "choice.json").write_text(json.dumps({"chosen": {"lors": {"lr_img": 100.0, "iterations": 500}}}))
        pd.DataFrame(_runs("lors", [0.0, 0.0, 0.0], set="lors_lr100", iterations=1000)  # not chosen: left out
                     + _runs("lors", students, set="lors_lr100", iterations=500)).to_csv(f / "runs.csv", index=False)
        folders.append(f)
    got = tables.sets_comparison(ref, folders, "random").iloc[0]
    naive = stats.mean_difference([6.0, 8.0, 10.0], [2.0, 3.0, 4.0])  # the three set means against the students
    assert (got["a"], got["b"], got["n_sets"]) == ("lors", "random", 3)
    assert got["mean_a"] == pytest.approx(8.0) and got["sd_sets"] == pytest.approx(2.0)
    for k in ("diff", "ci_low", "ci_high", "p"):
        assert got[k] == pytest.approx(naive[k]), k
    table = tables.sets(ref, ",".join(map(str, folders)), "random")
    assert "| lors − random | field | convnet | 8.0 | 2.0 | +5.0 |" in table
    (folders[2] / "runs.csv").write_text(pd.DataFrame(_runs("tm", [1.0, 2.0, 3.0], set="lors_lr100",
                                                            iterations=500)).to_csv(index=False))
    with pytest.raises(ValueError, match="not every set has every method"):
        tables.sets_comparison(ref, folders, "random")
