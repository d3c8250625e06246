"""studies.seeds: PDS's set means over distillation seeds against the baselines' students (naive references)."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from studies import seeds


def _runs(method, values, set_seed=None, protocol="field", encoder="convnet"):
    """runs.csv rows: one student per value, val and test at epochs 0 and 10 (epoch 10 best on val)."""
    rows = []
    for i, v in enumerate(values):
        for epoch, shift in ((0, -5.0), (10, 0.0)):
            for split, extra in (("val", 1.0), ("test", 0.0)):
                rows.append({"protocol": protocol, "method": method, "image_encoder": encoder, "seed": 42 + i,
                             "n_train": 100, "epochs": 10, "epoch": epoch, "split": split, "loss": np.nan,
                             **{k: 0.0 for k in ("IR@1", "IR@5", "IR@10", "TR@1", "TR@5", "TR@10")},
                             "r_mean": v + shift + extra, "seconds": 1.0})
    return pd.DataFrame(rows)


def test_pds_set_means_against_random_students_by_welch(tmp_path):
    base = pd.concat([_runs("pds", [10, 11, 12]), _runs("pds_real", [5, 5, 6]), _runs("random", [8, 9, 7])])
    s43 = tmp_path / "s43.csv"
    _runs("pds", [14, 15, 16]).to_csv(s43, index=False)
    s44 = tmp_path / "s44.csv"
    pd.concat([_runs("pds", [6, 7, 8]), _runs("random", [0, 0, 0])]).to_csv(s44, index=False)  # random ignored
    runs = seeds.load_sets(base, {43: s43, 44: s44}, base_seed=42)
    sel = seeds.selected(runs)
    assert set(sel["epoch"]) == {10}  # val-selected epoch, test figures
    means = seeds.set_means(sel)
    pds = means[means["method"] == "pds"].set_index("set_seed")["r_mean"]
    assert pds.to_dict() == {42: 11.0, 43: 15.0, 44: 7.0}
    c = seeds.compare(sel, seeds.set_means(sel), ["random"], first_set=42)
    row = c[c["a"] == "pds"].iloc[0]
    ref = sps.ttest_ind([11.0, 15.0, 7.0], [8.0, 9.0, 7.0], equal_var=False)
    assert row["diff"] == pytest.approx(11.0 - 8.0) and row["p"] == pytest.approx(ref.pvalue)
    assert row["sd_sets"] == pytest.approx(4.0) and row["n_sets"] == 3
    one = sps.ttest_ind([10.0, 11.0, 12.0], [8.0, 9.0, 7.0], equal_var=False)
    assert row["one_set_p"] == pytest.approx(one.pvalue)
    tree = seeds.metrics_tree(seeds.set_means(sel), "toyflickr", 100)
    assert tree["field"]["pds"]["convnet"] == {"r_mean": 11.0, "sd": 4.0, "sd_students": 1.0, "n": 3}


def test_a_set_without_pds_rows_and_the_base_seed_twice_are_refused(tmp_path):
    base = _runs("pds", [1, 2, 3])
    f = tmp_path / "s43.csv"
    _runs("random", [1, 2, 3]).to_csv(f, index=False)
    with pytest.raises(ValueError, match="no rows of pds"):
        seeds.load_sets(base, {43: f}, base_seed=42)
    with pytest.raises(ValueError, match="base.seed"):
        seeds.load_sets(base, {42: f}, base_seed=42)


def test_set_runs_finds_each_seed_folder_and_names_the_command_when_none(tmp_path):
    with pytest.raises(FileNotFoundError, match="seeds_report"):
        seeds.set_runs(tmp_path)
    (tmp_path / "s43" / "evaluate").mkdir(parents=True)
    (tmp_path / "s43" / "evaluate" / "runs.csv").write_text("x\n")
    (tmp_path / "s44").mkdir()  # unfinished: no runs.csv
    assert list(seeds.set_runs(tmp_path)) == [43]


def test_commands_reuse_the_finished_runs_embeddings_and_seed_both_steps():
    cmds = seeds.commands("build/w/m100", "build/s/s43", "toyflickr", 100, 43)
    flat = [" ".join(c) for c in cmds]
    assert [next(a for a in c if a.startswith("notebooks/")) for c in cmds] == [
        "notebooks/02_cluster.ipynb", "notebooks/03_match.ipynb", "notebooks/04_synthesize.ipynb",
        "notebooks/05_evaluate.ipynb"]
    assert "-p seed 43" in flat[0] and "-p seed 43" in flat[2]
    assert all("-p embeddings_dir build/w/m100/embeddings" in f for f in flat)
    assert "-p methods pds,pds_real" in flat[3] and "text_features_dir build/w/m100/text_features" in flat[3]
