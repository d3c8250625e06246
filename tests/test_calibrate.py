"""The calibration of a realistic world (studies.calibrate): knob parsing, the figures read off the runs (val-
selected epochs, the test split never used to choose), the verdict against the target ranges, the plot."""

import numpy as np
import pandas as pd
import pytest

from pds import contrastive, data
from pds.toy import world
from studies import calibrate


def test_parse_knobs_builds_knobs_and_refuses_bad_entries():
    k = calibrate.parse_knobs("caption_mention_rate=0.5, clutter=1.5,n_shapes=15")
    assert k == world.Knobs(caption_mention_rate=0.5, clutter=1.5, n_shapes=15) and isinstance(k.n_shapes, int)
    assert calibrate.parse_knobs("") == world.Knobs()
    with pytest.raises(ValueError, match="--knobs entry 'clutterr=1'"):
        calibrate.parse_knobs("clutterr=1")
    with pytest.raises(ValueError, match="--knobs entry 'clutter'"):
        calibrate.parse_knobs("clutter")
    with pytest.raises(ValueError, match="keep it 0"):
        calibrate.parse_knobs("mismatch_rate=0.2")
    with pytest.raises(ValueError, match="n_shapes"):
        calibrate.parse_knobs("n_shapes=40")


def _runs(curves: dict) -> pd.DataFrame:
    """budget -> {seed: [(epoch, val r_mean, test r_mean), ...]} as run_student's history rows."""
    rows = []
    for budget, seeds in curves.items():
        for seed, points in seeds.items():
            for epoch, v, t in points:
                rows += [{"budget": budget, "seed": seed, "epoch": epoch, "split": "val", "r_mean": v},
                         {"budget": budget, "seed": seed, "epoch": epoch, "split": "test", "r_mean": t}]
    return pd.DataFrame(rows)


def test_figures_read_val_selected_epochs_and_the_verdict_uses_val_only():
    runs = _runs({
        "full": {42: [(0, 1, 1), (1, 40, 80), (2, 50, 45), (3, 50, 99)]},  # tie at 50: the earlier epoch 2
        "random@100": {42: [(0, 1, 1), (10, 5, 9)], 43: [(0, 1, 1), (10, 4, 3)]},
        "random@500": {42: [(0, 1, 1), (10, 12, 30), (20, 10, 50)], 43: [(0, 1, 1), (10, 13, 2)]},
    })
    fig = calibrate.figures(runs)
    assert fig["full"] == {"val_r_mean": 50.0, "test_r_mean": 45.0, "seeds": 1, "epoch": [2],
                           "val_curve": [1.0, 40.0, 50.0, 50.0]}
    assert fig["random@100"]["val_r_mean"] == 4.5 and fig["random@100"]["test_r_mean"] == 6.0
    assert fig["random@500"]["val_r_mean"] == 12.5 and fig["random@500"]["epoch"] == [10, 10]
    v = calibrate.verdict(fig, "val")
    assert v["ratios"] == {"random@100": 0.09, "random@500": 0.25}
    assert v["all_in_range"] and v["distance_to_flickr"] < 0.01
    t = calibrate.verdict(fig, "test")  # recorded, never used to choose
    assert t["ratios"]["random@500"] == pytest.approx(16 / 45, abs=1e-4) and t["in_range"]["full>=40"]
    low = calibrate.verdict({**fig, "full": {**fig["full"], "val_r_mean": 30.0}}, "val")
    assert not low["in_range"]["full>=40"] and not low["all_in_range"]


def test_plot_draws_every_recorded_candidate(tmp_path):
    with pytest.raises(FileNotFoundError, match="no .*summary.json"):
        calibrate.plot(tmp_path)
    for name, r100 in (("c01", 0.3), ("c02", 0.1)):
        fig = {"full": {"val_r_mean": 60.0, "test_r_mean": 58.0}, "random@100": {"val_r_mean": 60 * r100,
               "test_r_mean": 58 * r100}, "random@500": {"val_r_mean": 18.0, "test_r_mean": 17.0}}
        data.save_json(tmp_path / name / "summary.json", {"name": name, "figures": fig, "val": calibrate.verdict(fig),
                                                          "test": calibrate.verdict(fig, "test")})
    assert [r["name"] for r in calibrate.collect(tmp_path)] == ["c01", "c02"]
    png = calibrate.plot(tmp_path)
    assert png.stat().st_size > 10_000 and np.asarray(__import__("PIL.Image").Image.open(png)).shape[2] in (3, 4)


def test_world_examples_stack_one_row_per_world(tmp_path):
    from PIL import Image

    for name, knobs in (("plain", {}), ("busy", {"clutter": 2.0, "caption_mention_rate": 0.5})):
        world.generate_toyworld(tmp_path / "raw" / name, n_train=3, n_val=1, n_test=1, seed=0, **knobs)
    png = calibrate.world_examples(("plain", "busy"), n=3, out_dir=tmp_path / "out", raw_dir=tmp_path / "raw")
    one = calibrate.world_examples(("plain",), n=3, out_dir=tmp_path / "one", raw_dir=tmp_path / "raw")
    assert Image.open(png).height > 1.8 * Image.open(one).height


def test_train_baselines_trains_random_at_both_budgets_for_every_seed_and_full_for_the_first(monkeypatch, tmp_path):
    """The students come from evaluate.run_evaluation (the evaluate stage's own), labelled by budget."""
    from pds import evaluate

    world.generate_toyworld(tmp_path / "toyworld", n_train=600, n_val=2, n_test=2, seed=0)
    calls = []

    def fake_run(ev, load_encoder, settings, method, encoder, seed, ids):
        calls.append((method, seed, len(ids)))
        hist = pd.DataFrame([{"protocol": "field", "method": method, "image_encoder": encoder, "seed": seed,
                              "n_train": 600 if method == "full" else len(ids), "epochs": 1, "epoch": 0,
                              "split": split, "loss": 0.0, "seconds": 0.0, **dict.fromkeys(contrastive.METRICS, 1.0)}
                             for split in ("val", "test")])
        return hist, None

    monkeypatch.setattr(evaluate, "run_student", fake_run)
    settings = evaluate.TrainSettings(1, 1, 0.1, 0.0, 2, 1, full_seeds=1)
    runs = calibrate.train_baselines(tmp_path / "toyworld", tmp_path, np.zeros((3000 + 20, 4), np.float32), [42, 43],
                                     1, settings)
    assert sorted(calls) == sorted([("random", 42, 100), ("random", 43, 100), ("full", 42, 3000),
                                    ("random", 42, 500), ("random", 43, 500)])
    assert runs.groupby("budget")["seed"].nunique().to_dict() == {"full": 1, "random@100": 2, "random@500": 2}
