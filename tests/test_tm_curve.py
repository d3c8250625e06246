"""studies.tm_curve's rule and summaries on hand-made figures (the snapshots themselves: tests/test_tm.py)."""

import numpy as np
import pandas as pd
import pytest

from studies import tm_curve


def test_candidates_parse_and_fail_with_one_line():
    assert tm_curve.parse_candidates("tm:1000, lors:100") == [("tm", 1000.0), ("lors", 100.0)]
    for bad in ("kip:10", "tm", "tm:x", "tm:0", "tm:5,tm:5", ""):
        with pytest.raises(ValueError, match="studies/params.yaml"):
            tm_curve.parse_candidates(bad)


def _curve(rows):
    return pd.DataFrame(rows, columns=["method", "set", "lr_img", "iterations", "val"])


def test_choose_takes_the_best_val_and_breaks_ties_by_fewer_iterations_then_lower_lr():
    curve = _curve([
        ("tm", "tm_lr1000", 1000, 0, 5.0), ("tm", "tm_lr1000", 1000, 150, 7.04),
        ("tm", "tm_lr1000", 1000, 500, 6.96), ("tm", "tm_lr1000", 1000, 1000, 3.0),  # 7.0 == 7.0: 150 wins
        ("lors", "lors_lr100", 100, 0, 5.0), ("lors", "lors_lr100", 100, 500, 9.0),
        ("lors", "lors_lr1000", 1000, 0, 5.0), ("lors", "lors_lr1000", 1000, 500, 9.02),  # tie: lr 100 wins
        ("lors", "lors_lr1000", 1000, 1000, 8.0)])
    got = tm_curve.choose(curve).set_index("method")
    assert (got.loc["tm", "iterations"], got.loc["tm", "lr_img"]) == (150, 1000)
    assert (got.loc["lors", "iterations"], got.loc["lors", "lr_img"]) == (500, 100)
    clear = _curve([("tm", "tm_lr1000", 1000, 0, 5.0), ("tm", "tm_lr1000", 1000, 1000, 5.2)])
    assert tm_curve.choose(clear)["iterations"].tolist() == [1000]


def test_plateau_compares_the_last_window_with_the_one_before():
    falling = np.linspace(2.0, 1.0, 400)
    got = tm_curve.plateau(falling)
    before, last = falling[200:300].mean(), falling[300:].mean()
    assert got["change"] == pytest.approx((last - before) / before, abs=1e-4) and got["stopped_improving"] is False
    flat = np.r_[np.linspace(2, 1, 200), np.full(200, 1.0)]
    assert tm_curve.plateau(flat)["stopped_improving"] is True
    assert tm_curve.plateau(falling[:150])["stopped_improving"] is None


def test_val_figures_take_each_students_best_val_epoch_and_its_test():
    rows = []
    for seed, (v0, v1, t0, t1) in {0: (1.0, 3.0, 10.0, 20.0), 1: (4.0, 2.0, 30.0, 40.0)}.items():
        for epoch, v, t in ((0, v0, t0), (1, v1, t1)):
            for split, r in (("val", v), ("test", t)):
                rows.append({"protocol": "field", "method": "tm", "image_encoder": "convnet", "seed": seed,
                             "epochs": 2, "epoch": epoch, "split": split, "r_mean": r, "set": "tm_lr1000",
                             "iterations": 150, **{k: 0.0 for k in ("IR@1", "IR@5", "IR@10", "TR@1", "TR@5",
                                                                   "TR@10")}})
    got = tm_curve.val_figures(pd.DataFrame(rows)).set_index("seed")
    assert got.loc[0, "val"] == 3.0 and got.loc[0, "test"] == 20.0
    assert got.loc[1, "val"] == 4.0 and got.loc[1, "test"] == 30.0


def test_match_settings_take_params_yaml_tm_section_and_the_candidates_budget_and_lr():
    from pds import config, tm

    t = config.load()["tm"]
    s = tm_curve.match_settings(t, 1000, 100)
    assert (s.iterations, s.lr_img) == (1000, 100.0) and isinstance(s.lr_img, float)
    for key in ("syn_steps", "expert_epochs", "max_start_epoch", "mini_batch", "rank"):
        assert getattr(s, key) == t[key] and isinstance(getattr(s, key), int), key
    for key in ("lr_txt", "lr_lr", "alpha", "lr_sim"):
        assert getattr(s, key) == float(t[key]) and isinstance(getattr(s, key), float), key
    assert s.init_lr_image == tm.MatchSettings().init_lr_image  # what params.yaml does not set keeps its default


def test_reuse_experts_takes_a_runs_experts_only_with_its_settings_and_caption_features(tmp_path):
    from pds import artifacts, tm

    def features(name, value):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "text.npy").write_bytes(value)
        artifacts.write_manifest(folder, "text_features", ["text.npy"])
        return artifacts.open_artifact(folder, "text_features")

    ours, other = features("features", b"ours"), features("other", b"other")
    settings = {"lr_image": 0.1, "lr_text": 0.1, "seed": 42}
    experts = tm.Experts(np.zeros((2, 3, 5), np.float32), 3, "convnet", 4, 8, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0),
                         np.zeros((2, 2)), settings)
    tm.save_experts(tmp_path / "experts", experts, [ours])
    t = {"n_experts": 2, "epochs": 2, "lr_image": 0.1, "lr_text": 0.1}
    got, run = tm_curve.reuse_experts(tmp_path / "experts", ours, t, 42)
    assert (got.n_experts, got.epochs, got.settings["seed"]) == (2, 2, 42)
    assert run.folder == tmp_path / "experts"
    for bad, seed in (({**t, "lr_image": 0.2}, 42), ({**t, "n_experts": 4}, 42), (t, 7)):
        with pytest.raises(ValueError, match="experts trained with .* but params.yaml tm: / base.seed say"):
            tm_curve.reuse_experts(tmp_path / "experts", ours, bad, seed)
    with pytest.raises(ValueError):  # trained on other caption features
        tm_curve.reuse_experts(tmp_path / "experts", other, t, 42)
