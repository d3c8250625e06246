"""tm_evaluate: the MTT-VL / LoRS sets are trained and scored exactly as PDS's distilled set, under both
protocols, with CLIP's embedding of the nearest real caption as text under the paper's and LoRS's learned
similarity as its students' soft targets."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from fakes import tiny_evaluation_data
from PIL import Image

from pds import artifacts, data, evaluate, models, tm_evaluate


def _ev(rng):
    ev, feats = tiny_evaluation_data(rng)
    return replace(ev, synthetic=None, pds_text=None, pds_real=None), feats


def test_sets_train_under_both_protocols_with_the_right_text(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    ev, student_text = _ev(rng)
    clip_text = rng.normal(size=(40, 5)).astype(np.float32)
    sets = {}
    for m in tm_evaluate.METHODS:
        folder = tmp_path / m
        for i in range(3):
            data.save_png(folder / f"{i:04d}.png", Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)))
        data.save_table(folder / "synthetic.parquet", pd.DataFrame({"file": [f"{i:04d}.png" for i in range(3)],
                                                                     "caption": ["c"] * 3, "caption_id": [1, 5, 7]}))
        data.save_npy(folder / "text.npy", rng.normal(size=(3, 6)).astype(np.float32))
        if m == "lors":
            data.save_npy(folder / "similarity.npy", np.eye(3, dtype=np.float32) + 0.1)
        artifacts.write_manifest(folder, "tm", [f.name for f in folder.iterdir()])
        sets[m] = tm_evaluate.load_set(folder, 32)
    assert sets["tm"][0].shape == (3, 3, 32, 32) and sets["tm"][2]["caption_id"].tolist() == [1, 5, 7]
    assert sets["tm"][3] is None and sets["lors"][3].shape == (3, 3)
    seen = []
    real = evaluate.run_evaluation

    def spy(ev_p, *args, **kwargs):
        seen.append((args[7].protocol, ev_p.pds_text.copy(), ev_p.synthetic_similarity))  # args[7]: TrainSettings
        return real(ev_p, *args, **kwargs)

    monkeypatch.setattr(evaluate, "run_evaluation", spy)
    settings = {"field": evaluate.TrainSettings(2, 1, 0.1, 0.01, 4, 1),
                "paper": evaluate.TrainSettings(2, 1, 0.2, 0.0, 4, 1, protocol="paper")}
    load = lambda name: models.load_image_encoder(name, "", str(tmp_path))  # noqa: E731
    runs = tm_evaluate.evaluate_sets(ev, sets, clip_text, student_text, ["convnet"], load, [0, 1], settings)
    assert set(map(tuple, runs[["protocol", "method"]].drop_duplicates().to_numpy())) == {
        (p, m) for p in ("field", "paper") for m in ("tm", "lors")}
    assert (runs["n_train"] == 3).all()
    np.testing.assert_array_equal(seen[0][1], sets["tm"][1])  # field: the learned text
    np.testing.assert_array_equal(seen[2][1], clip_text[[1, 5, 7]])  # paper: CLIP of the nearest caption
    # (field, tm), (field, lors), (paper, tm), (paper, lors): LoRS's similarity travels with its set
    assert [s is None for _, _, s in seen] == [True, False, True, False]
    np.testing.assert_array_equal(seen[3][2], np.eye(3, dtype=np.float32) + np.float32(0.1))


def test_a_similarity_of_the_wrong_shape_fails_with_one_line(tmp_path):
    rng = np.random.default_rng(0)
    data.save_png(tmp_path / "0000.png", Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)))
    data.save_table(tmp_path / "synthetic.parquet", pd.DataFrame({"file": ["0000.png"], "caption": ["c"],
                                                                   "caption_id": [1]}))
    data.save_npy(tmp_path / "text.npy", np.zeros((1, 6), np.float32))
    data.save_npy(tmp_path / "similarity.npy", np.eye(2, dtype=np.float32))
    with pytest.raises(FileNotFoundError, match="has no manifest.json: its run did not finish.*pds.tm distill"):
        tm_evaluate.load_set(tmp_path, 32)
    run = artifacts.write_manifest(tmp_path, "tm", [f.name for f in tmp_path.iterdir()])
    with pytest.raises(ValueError, match="similarity.npy: shape"):
        tm_evaluate.load_set(tmp_path, 32)
    experts = artifacts.write_manifest(tmp_path / "experts", "experts", [])
    with pytest.raises(ValueError, match=rf"was made from no experts output, but .*experts holds experts run {experts.token}"):
        tm_evaluate.load_set(tmp_path, 32, [experts])
    assert run.inputs == {}
