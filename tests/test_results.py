"""pds.results: the epoch chosen on val, metrics.json as a keyed tree DVC reads, and the tables built on it."""

import json

import numpy as np
import pandas as pd
import pytest

from pds import contrastive, results


def _fake_runs():
    rows = []
    for method in ("pds", "random"):
        for seed in (0, 1):
            for epoch, val, test in ((0, 1.0, 1.0), (10, 5.0 + seed, 3.0), (20, 4.0, 9.0 + seed)):
                for split, r in (("val", val), ("test", test)):
                    m = {k: r + (1 if method == "pds" else 0) for k in contrastive.METRICS}
                    rows.append({"protocol": "field", "method": method, "image_encoder": "convnet", "seed": seed,
                                 "n_train": 100, "epochs": 20, "epoch": epoch, "split": split, "loss": 0.0, **m})
    return pd.DataFrame(rows)


def test_selection_on_val_and_on_test():
    sel = results.select_epochs(_fake_runs())
    val = sel[(sel.selected_on == "val") & (sel.method == "random")]
    assert val["epoch"].tolist() == [10, 10] and val["r_mean"].tolist() == [3.0, 3.0]
    test = sel[(sel.selected_on == "test") & (sel.method == "random")]
    assert test["epoch"].tolist() == [20, 20] and test["r_mean"].tolist() == [9.0, 10.0]


def test_metrics_json_is_a_tree_of_protocol_method_encoder():
    metrics = results.summarise(_fake_runs(), "toyworld", 100, methods=["pds", "random"])
    json.dumps(metrics, allow_nan=False)
    assert list(metrics) == ["dataset", "n_pairs", "seeds", "field"]
    assert {k: metrics[k] for k in ("dataset", "n_pairs", "seeds")} == {"dataset": "toyworld", "n_pairs": 100, "seeds": 2}
    assert list(metrics["field"]) == ["pds", "random"] and list(metrics["field"]["random"]) == ["convnet"]
    rnd = metrics["field"]["random"]["convnet"]
    assert set(rnd) == {*contrastive.METRICS, "sd", "n", "epochs", "test_selected"}
    assert rnd["r_mean"] == 3.0 and rnd["sd"] == 0.0 and rnd["n"] == 2 and rnd["epochs"] == 20
    # the test-selected rule picks epoch 20: r_mean 9 and 10, sample sd (ddof = 1) = 0.71, not the population's 0.5
    assert rnd["test_selected"]["r_mean"] == 9.5 and rnd["test_selected"]["sd"] == round(np.std([9, 10], ddof=1), 2)


def test_rows_flatten_the_tree_for_either_selection_rule():
    metrics = results.summarise(_fake_runs(), "toyworld", 100)
    val, test = results.rows(metrics, "val"), results.rows(metrics, "test")
    assert val[["method", "r_mean"]].values.tolist() == [["pds", 4.0], ["random", 3.0]]
    assert test.set_index("method").loc["random", "r_mean"] == 9.5
    with pytest.raises(ValueError, match="val or test"):
        results.rows(metrics, "last")
    with pytest.raises(ValueError, match="no protocol"):
        results.rows({"dataset": "x", "n_pairs": 1, "seeds": 1})


def test_tables_show_mean_and_sample_sd():
    table = results.results_table(_fake_runs(), "test", methods=["pds", "random"])
    assert table.loc[("field", "convnet", "random"), "r_mean"] == "9.5 ± 0.7"
    grid = results.rmean_grid(results.summarise(_fake_runs(), "toyworld", 100), "val")
    assert grid.loc["random", ("field", "convnet")] == "3.0 ± 0.0" and list(grid.index) == ["pds", "random"]
    one = pd.DataFrame({"r_mean": [3.0, 4.0], "sd": [0.5, 0.0], "n": [3, 1]})
    assert results.cells(one).tolist() == ["3.0 ± 0.5", "4.0 (1 seed)"]


def test_joinable_runs_need_the_same_seeds_and_epochs():
    epochs = {"field": 2, "paper": 3}
    other = pd.DataFrame({"protocol": ["field", "field", "paper", "paper", "field"],
                          "image_encoder": ["convnet", "convnet", "convnet", "convnet", "vit"],
                          "seed": [0, 1, 0, 1, 0], "epochs": [2, 2, 3, 3, 2], "method": "tm"})
    got = results.joinable_runs(other, ["field", "paper"], ["convnet"], [0, 1], epochs)
    assert got.index.tolist() == [0, 1, 2, 3]  # the vit row is not this run's
    assert results.joinable_runs(other, ["field"], ["convnet"], [0, 1, 2], epochs) is None  # other seeds
    longer = other.assign(epochs=[5, 5, 3, 3, 5])
    assert results.joinable_runs(longer, ["field", "paper"], ["convnet"], [0, 1], epochs) is None  # other epochs
    assert results.joinable_runs(other, ["field"], ["resnet"], [0, 1], epochs) is None  # nothing left


def _tree(figures):
    tree = {"dataset": "w", "n_pairs": 10, "seeds": 1}
    for m, e, r in figures:
        tree.setdefault("field", {}).setdefault(m, {})[e] = {**dict.fromkeys(contrastive.METRICS, r), "sd": 0.0,
                                                             "n": 1, "test_selected": {}}
    return tree


def test_gain_grid_subtracts_the_reference_on_each_student():
    metrics = _tree([("random", "a", 10.0), ("random", "b", 20.0), ("pds", "a", 12.0), ("pds", "b", 15.0),
                     ("full", "a", 50.0), ("full", "b", 60.0), ("tm", "a", 30.0), ("tm", "b", 5.0)])
    grid = results.gain_grid(metrics, "field", ["a", "b"], ["pds", "random", "full", "tm"])
    assert grid.index.tolist() == ["pds", "tm"] and grid.columns.tolist() == ["a", "b"]
    assert grid.loc["pds"].tolist() == [2.0, -5.0] and grid.loc["tm"].tolist() == [20.0, -15.0]
    with pytest.raises(ValueError, match="no 'herding' figures"):
        results.gain_grid(metrics, "field", ["a"], ["pds"], reference="herding")
