"""Evaluate stage (`pds.evaluate`): training-set construction, students run across methods, workers and
protocols, epoch selection and the metrics.json shape, loaders and bad inputs (the student itself:
test_contrastive.py)."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from fakes import bn_encoder, tiny_evaluation_data

from pds import contrastive, evaluate, models


def test_workers_give_the_same_runs_as_one_process(tmp_path):
    import functools

    rng = np.random.default_rng(0)
    n = 20
    ev, _ = tiny_evaluation_data(rng, n)
    load = functools.partial(models.load_image_encoder, pretrained="", folder=str(tmp_path))
    settings = evaluate.TrainSettings(epochs=2, full_epochs=1, lr=0.05, lr_image=0.01, batch_size=4, eval_every=1)
    args = (ev, ["pds", "random", "full", "pds_real"], ["convnet"], load, rng.normal(size=(n, 4)), rng.normal(size=(2 * n, 4)), 3,
            [0, 1], settings)
    one, tops_one = evaluate.run_evaluation(*args, workers=1, progress=False)
    two, tops_two = evaluate.run_evaluation(*args, workers=2, progress=False)
    cols = [c for c in one.columns if c != "seconds"]
    pd.testing.assert_frame_equal(one[cols], two[cols])
    assert all((tops_one[k] == tops_two[k]).all() for k in tops_one)
    assert one.groupby(["method", "seed"]).ngroups == 8
    assert (one["protocol"] == "field").all() and set(tops_one) == {("field", m, "convnet", s) for m in
                                                                    ("pds", "random", "full", "pds_real") for s in (0, 1)}


def test_nearest_real_images_are_train_images_closest_to_each_prototype():
    images, _ = _tables()
    clip_image = np.eye(10)[:, :8] * 3.0  # image i points along axis i (images 8, 9: zero vectors)
    protos = np.eye(8)[[2, 5, 8 % 8]] + 0.1  # nearest: images 2, 5, 0
    assert evaluate.nearest_real_images(protos, clip_image, images).tolist() == [2, 5, 0]
    protos_val = np.eye(8)[[6]]  # image 6 is a val image: the nearest train image is another one
    assert evaluate.nearest_real_images(protos_val, clip_image, images)[0] in range(6)


# ----------------------------------------------------------------------------------------------------
# training sets


def _tables(n_img=10, per=5):
    split = ["train"] * 6 + ["val"] * 2 + ["test"] * 2
    images = pd.DataFrame({"image_id": np.arange(n_img), "path": [f"{i}.png" for i in range(n_img)],
                           "split": split[:n_img]})
    image_id = np.repeat(np.arange(n_img), per)
    captions = pd.DataFrame({"caption_id": np.arange(len(image_id)), "image_id": image_id,
                             "split": [split[i] for i in image_id], "caption": [f"c{k}" for k in range(len(image_id))]})
    return images, captions


def test_select_pairs_keeps_to_the_train_split_and_the_budget():
    images, captions = _tables()
    rng = np.random.default_rng(0)
    clip_image, clip_text = rng.normal(size=(10, 4)), rng.normal(size=(50, 4))
    train_ids = set(captions.caption_id[captions.split == "train"])
    for method in ("random", "herding", "kcenter"):
        ids = evaluate.select_pairs(method, captions, clip_image, clip_text, n_pairs=7, seed=0)
        assert len(ids) == len(set(ids)) == 7 and set(ids) <= train_ids, method
    assert set(evaluate.select_pairs("full", captions, clip_image, clip_text, 7, 0)) == train_ids
    with pytest.raises(ValueError, match="budget"):
        evaluate.select_pairs("random", captions, clip_image, clip_text, n_pairs=31, seed=0)
    with pytest.raises(ValueError, match="unknown baseline"):
        evaluate.select_pairs("forgetting", captions, clip_image, clip_text, 7, 0)
    with pytest.raises(ValueError, match="no train-split"):
        evaluate.select_pairs("random", captions[captions.split != "train"], clip_image, clip_text, 7, 0)


def test_pds_text_targets_are_member_means_with_caption_fallback():
    feats = np.random.default_rng(0).normal(size=(12, 3)).astype(np.float32)
    members = pd.DataFrame({"prototype": [0, 0, 0, 2], "caption_id": [1, 4, 5, 9]})
    prompts = np.array([4, 7, 9])
    got, n_fallback = evaluate.pds_text_targets(members, prompts, feats, "prototype")
    np.testing.assert_allclose(got[0], feats[[1, 4, 5]].mean(0), rtol=1e-6)
    np.testing.assert_allclose(got[1], feats[7])  # no members: the retrieved caption
    np.testing.assert_allclose(got[2], feats[9])
    assert n_fallback == 1 and got.dtype == np.float32
    got, _ = evaluate.pds_text_targets(members, prompts, feats, "caption")
    np.testing.assert_allclose(got, feats[prompts])
    with pytest.raises(ValueError, match="text_target"):
        evaluate.pds_text_targets(members, prompts, feats, "mean")
    with pytest.raises(ValueError, match="empty"):
        evaluate.pds_text_targets(members, np.zeros(0, np.int64), feats)


def test_captions_without_images_are_refused():
    images, captions = _tables()
    pixels = torch.zeros((2, 3, 4, 4), dtype=torch.uint8)
    feats = np.zeros((len(captions), 3), np.float32)
    ok = evaluate.retrieval_set(images, captions, feats, "test", pixels)
    assert ok.txt2img.tolist() == [0] * 5 + [1] * 5
    bad = captions.copy()
    bad.loc[bad.split == "test", "image_id"] = 3  # test captions pointing to a train image
    with pytest.raises(ValueError, match="point to images"):
        evaluate.retrieval_set(images, bad, feats, "test", pixels)
    with pytest.raises(ValueError, match="has 0 images"):
        evaluate.retrieval_set(images[images.split != "test"], captions, feats, "test", pixels)


# ----------------------------------------------------------------------------------------------------
# selection rules and metrics.json


def _fake_runs():
    rows = []
    for method in ("pds", "random"):
        for seed in (0, 1):
            for epoch, val, test in ((0, 1.0, 1.0), (10, 5.0 + seed, 3.0), (20, 4.0, 9.0 + seed)):
                for split, r in (("val", val), ("test", test)):
                    m = {k: r + (1 if method == "pds" else 0) for k in contrastive.METRICS}
                    rows.append({"protocol": "field", "method": method, "image_encoder": "convnet", "seed": seed, "n_train": 100,
                                 "epochs": 20, "epoch": epoch, "split": split, "loss": 0.0, **m})
    return pd.DataFrame(rows)


def test_selection_on_val_and_on_test():
    sel = evaluate.select_epochs(_fake_runs())
    val = sel[(sel.selected_on == "val") & (sel.method == "random")]
    assert val["epoch"].tolist() == [10, 10] and val["r_mean"].tolist() == [3.0, 3.0]
    test = sel[(sel.selected_on == "test") & (sel.method == "random")]
    assert test["epoch"].tolist() == [20, 20] and test["r_mean"].tolist() == [9.0, 10.0]


def test_metrics_json_has_the_design_shape():
    metrics = evaluate.summarise(_fake_runs(), "toyworld", 100, methods=["pds", "random"])
    json.dumps(metrics, allow_nan=False)
    assert {k: metrics[k] for k in ("dataset", "n_pairs", "seeds")} == {"dataset": "toyworld", "n_pairs": 100, "seeds": 2}
    design = {"method", "image_encoder", "protocol", "selected_on", "IR@1", "IR@5", "IR@10", "TR@1", "TR@5", "TR@10",
              "r_mean", "r_mean_std"}
    for entry in metrics["results"]:
        assert design <= set(entry) and set(entry) - design == {"epochs"}  # "seeds" only where full_seeds cut them
    rnd = {e["selected_on"]: e for e in metrics["results"] if e["method"] == "random"}
    assert rnd["val"]["r_mean"] == 3.0 and rnd["val"]["r_mean_std"] == 0.0
    assert rnd["test"]["r_mean"] == 9.5 and rnd["test"]["r_mean_std"] == 0.5
    table = evaluate.results_table(_fake_runs(), "val", methods=["pds", "random"])
    assert table.loc[("field", "convnet", "random"), "r_mean"] == "3.0 ± 0.0"
    grid = evaluate.rmean_grid(metrics, "val")
    assert grid.loc["random", ("field", "convnet")] == "3.0 ± 0.0" and list(grid.index) == ["pds", "random"]


# ----------------------------------------------------------------------------------------------------
# loaders


def test_image_encoder_names(tmp_path):
    with pytest.raises(ValueError, match="convnet, resnet, vit"):
        models.load_image_encoder("alexnet_from_1998", pretrained="")
    with pytest.raises(FileNotFoundError, match="pretrain the toy encoders"):
        models.load_image_encoder("convnet", pretrained="toy", folder=str(tmp_path))
    for name in models.TOY_IMAGE_ENCODERS:
        enc = models.load_image_encoder(name, pretrained="", folder=str(tmp_path))
        out = enc.model(torch.zeros(2, 3, enc.image_size, enc.image_size))
        assert out.shape == (2, enc.num_features) and enc.pretrained == ""


def test_toy_encoder_round_trip(tmp_path):
    from pds.toy import encoders

    encoders.pretrain_toy_encoders(tmp_path, names=["convnet"], n_images=64, n_val=16, epochs=1, batch_size=32,
                                   progress=False)
    config = json.loads((tmp_path / "convnet" / "config.json").read_text())
    assert config["pretraining"]["images"] == 64 and set(config["pretraining"]["val_accuracy"]) == set(encoders.LABELS)
    enc = models.load_image_encoder("convnet", pretrained="toy", folder=str(tmp_path))
    again = models.load_image_encoder("convnet", pretrained="toy", folder=str(tmp_path))
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(enc.model.eval()(x), again.model.eval()(x))
    assert enc.pretrained == "toy" and tuple(config["mean"]) == enc.mean


def test_timm_students_follow_the_field_feature_sizes():
    """Random init only (pretrained=''): the ImageNet weights are never downloaded in tests."""
    nfnet = models.load_image_encoder("nfnet_l0", pretrained="")
    assert nfnet.num_features == 2304 and nfnet.image_size == 224 and nfnet.mean == models.CLIP_MEAN
    vit = models.load_image_encoder("vit_tiny_patch16_224", pretrained="")
    assert vit.num_features == 1000  # the cross-architecture students keep timm's 1000-class head


# ----------------------------------------------------------------------------------------------------
# the paper's protocol: frozen image encoder, CLIP text side, only the head trains


def _paper_data(rng):
    return tiny_evaluation_data(rng, image_size=4)[0]


def test_paper_protocol_trains_only_the_text_head_and_leaves_the_encoder_untouched():
    rng = np.random.default_rng(0)
    ev = _paper_data(rng)
    clip_text = rng.normal(size=(40, 5)).astype(np.float32)  # another text space (the CLIP side)
    ev = evaluate.with_text(ev, clip_text, clip_text[:3] + 1.0)
    enc = bn_encoder()
    before = {k: v.clone() for k, v in enc.model.state_dict().items()}  # weights and BatchNorm statistics
    settings = evaluate.TrainSettings(epochs=30, full_epochs=2, lr=0.2, lr_image=0.0, batch_size=4, eval_every=10,
                                      protocol="paper", lr_step=20, full_eval_every=2)
    runs, tops = evaluate.run_evaluation(ev, ["pds", "random", "full"], ["tiny"], lambda name: enc,
                                         rng.normal(size=(20, 4)), clip_text, 3, [0], settings, progress=False)
    after = enc.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the frozen encoder changed"
    assert not enc.model.training  # embedded in eval mode, as released
    assert (runs["protocol"] == "paper").all() and set(tops) == {("paper", m, "tiny", 0) for m in ("pds", "random", "full")}
    assert runs.loc[runs.method == "full", "epoch"].unique().tolist() == [0, 2]
    # the head did learn: training loss on the 3 PDS pairs falls below chance
    pds = runs[(runs.method == "pds") & (runs.split == "val")].set_index("epoch")
    assert pds.loc[30, "loss"] < np.log(3)


def test_clip_text_targets_are_the_rows_of_the_text_prototypes():
    rng = np.random.default_rng(0)
    prototype_text = rng.normal(size=(4, 5)).astype(np.float32)
    clip_text = rng.normal(size=(30, 5)).astype(np.float32)
    prompts = pd.DataFrame({"prototype": np.arange(4), "caption_id": [3, 9, 11, 20]})
    synthetic = pd.DataFrame({"file": ["a", "b", "c"], "caption": ["x"] * 3, "prototype": [2, 0, 3]})
    np.testing.assert_array_equal(evaluate.clip_text_targets(synthetic, prototype_text, prompts, clip_text),
                                  prototype_text[[2, 0, 3]])
    np.testing.assert_array_equal(evaluate.clip_text_targets(synthetic, prototype_text, prompts, clip_text, "caption"),
                                  clip_text[[11, 3, 20]])
    with pytest.raises(ValueError, match="-d"):
        evaluate.clip_text_targets(synthetic, prototype_text, prompts, clip_text[:, :4])
    with pytest.raises(ValueError, match="outside"):
        evaluate.clip_text_targets(synthetic.assign(prototype=[0, 1, 4]), prototype_text, prompts, clip_text)


def test_with_text_swaps_the_caption_features_of_every_split():
    rng = np.random.default_rng(1)
    ev = _paper_data(rng)
    other = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
    got = evaluate.with_text(ev, other, None)
    cap = ev.captions
    np.testing.assert_array_equal(got.val.text, other[cap.caption_id[cap.split == "val"]])
    np.testing.assert_array_equal(got.test.text, other[cap.caption_id[cap.split == "test"]])
    np.testing.assert_array_equal(got.test.txt2img, ev.test.txt2img)
    assert got.pds_text is None and ev.val.text.shape[1] == 6  # the original is unchanged
    with pytest.raises(ValueError, match="caption features"):
        evaluate.with_text(ev, other[:5], None)


def test_bad_protocol_and_mismatched_budget_are_refused(tmp_path):
    with pytest.raises(ValueError, match="evaluate.protocol"):
        evaluate.TrainSettings(1, 1, 0.1, 0.0, 4, 1, protocol="papers")
    from pds import data

    data.save_json(tmp_path / "summary.json", {"n_clusters": 50})
    evaluate.check_budget(50, tmp_path)
    with pytest.raises(ValueError, match="different budgets"):
        evaluate.check_budget(100, tmp_path)


def test_protocol_settings_train_both_stages_alike_and_refuse_bad_input():
    values = {"epochs": 100, "full_epochs": 2, "lr": 0.1, "lr_image": 0.001, "batch_size": 128, "eval_every": 10,
              "full_one_per_image": 1, "full_seeds": 0, "paper_lr": 0.2, "paper_epochs": 101, "paper_lr_step": 52,
              "text_encoder": "minilm"}  # other keys of params.yaml's evaluate: are ignored
    s = evaluate.protocol_settings(["field", "paper"], values)
    assert (s["field"].epochs, s["field"].full_epochs, s["field"].lr, s["field"].lr_image) == (100, 2, 0.1, 0.001)
    assert s["field"].protocol == "field" and s["field"].full_eval_every == 1
    p = s["paper"]
    assert (p.protocol, p.epochs, p.full_epochs, p.lr, p.lr_image, p.lr_step, p.full_eval_every) == \
        ("paper", 101, 101, 0.2, 0.0, 52, 10)
    assert list(evaluate.protocol_settings(["paper"], values)) == ["paper"]
    with pytest.raises(ValueError, match="unknown or no protocols"):
        evaluate.protocol_settings(["feild"], values)
    with pytest.raises(ValueError, match="lack paper_lr_step"):
        evaluate.protocol_settings(["field"], {k: v for k, v in values.items() if k != "paper_lr_step"})


def test_full_seeds_trains_the_full_bound_for_the_first_seeds_only(monkeypatch):
    """evaluate.full_seeds: the costliest student (every pair) for fewer seeds; every other method keeps them all,
    and metrics.json says how many seeds each entry averages."""
    calls = []

    def fake_run(ev, load_encoder, settings, method, encoder, seed, ids):
        calls.append((method, seed))
        hist = pd.DataFrame([{"protocol": settings.protocol, "method": method, "image_encoder": encoder, "seed": seed,
                              "n_train": 1, "epochs": 1, "epoch": e, "split": split, "loss": 0.0, "seconds": 0.0,
                              **{k: float(seed) for k in contrastive.METRICS}} for e in (0, 1) for split in ("val", "test")])
        return hist, None

    monkeypatch.setattr(evaluate, "run_student", fake_run)
    monkeypatch.setattr(evaluate, "select_pairs", lambda m, *a: np.arange(3))
    settings = evaluate.TrainSettings(1, 1, 0.1, 0.0, 2, 1, full_seeds=1)
    runs, _ = evaluate.run_evaluation(SimpleNamespace(synthetic=None, pds_real=None, pds_text=None, captions=None),
                                      ["random", "full"], ["convnet"], None, None, None, 3, [42, 43, 44], settings)
    assert calls == [("random", 42), ("random", 43), ("random", 44), ("full", 42)]
    seeds = {r["method"]: r.get("seeds") for r in evaluate.summarise(runs, "toy", 3)["results"]}
    assert seeds == {"random": None, "full": 1}  # an entry says its seeds only when they are fewer than the run's
    with pytest.raises(ValueError, match="full_seeds=-1"):
        evaluate.TrainSettings(1, 1, 0.1, 0.0, 2, 1, full_seeds=-1)


def test_joinable_runs_need_the_same_seeds_and_epochs():
    settings = {"field": evaluate.TrainSettings(2, 1, 0.1, 0.01, 4, 1),
                "paper": evaluate.TrainSettings(3, 3, 0.2, 0.0, 4, 1, protocol="paper")}
    other = pd.DataFrame({"protocol": ["field", "field", "paper", "paper", "field"],
                          "image_encoder": ["convnet", "convnet", "convnet", "convnet", "vit"],
                          "seed": [0, 1, 0, 1, 0], "epochs": [2, 2, 3, 3, 2], "method": "tm"})
    got = evaluate.joinable_runs(other, ["field", "paper"], ["convnet"], [0, 1], settings)
    assert got.index.tolist() == [0, 1, 2, 3]  # the vit row is not this run's
    assert evaluate.joinable_runs(other, ["field"], ["convnet"], [0, 1, 2], settings) is None  # other seeds
    longer = other.assign(epochs=[5, 5, 3, 3, 5])
    assert evaluate.joinable_runs(longer, ["field", "paper"], ["convnet"], [0, 1], settings) is None  # other epochs
    assert evaluate.joinable_runs(other, ["field"], ["resnet"], [0, 1], settings) is None  # nothing left


def test_gain_grid_subtracts_the_reference_on_each_student():
    rows = [{"protocol": "field", "method": m, "image_encoder": e, "selected_on": "val", "r_mean": r}
            for m, e, r in [("random", "a", 10.0), ("random", "b", 20.0), ("pds", "a", 12.0), ("pds", "b", 15.0),
                            ("full", "a", 50.0), ("full", "b", 60.0), ("tm", "a", 30.0), ("tm", "b", 5.0)]]
    grid = evaluate.gain_grid({"results": rows}, "field", ["a", "b"], ["pds", "random", "full", "tm"])
    assert grid.index.tolist() == ["pds", "tm"] and grid.columns.tolist() == ["a", "b"]
    assert grid.loc["pds"].tolist() == [2.0, -5.0] and grid.loc["tm"].tolist() == [20.0, -15.0]
    with pytest.raises(ValueError, match="no 'herding' rows"):
        evaluate.gain_grid({"results": rows}, "field", ["a"], ["pds"], reference="herding")


def test_every_name_of_an_evaluation_is_checked_at_once(tmp_path):
    evaluate.check_settings(["pds", "random"], ["convnet", "resnet"], ["field"], "prototype", "none")
    with pytest.raises(ValueError, match=r"unknown or no image encoders \['nosuch'\].*evaluate.image_encoders"):
        evaluate.check_settings(["pds"], "convnet,nosuch", ["field"], pretrained="none")  # the second of the list
    with pytest.raises(ValueError, match=r"unknown or no methods \['randm'\]"):
        evaluate.check_methods("pds,randm")
    with pytest.raises(ValueError, match=r"unknown or no protocols \['feild'\].*evaluate.protocol"):
        evaluate.check_protocols(["field", "feild"])
    with pytest.raises(ValueError, match="name one twice"):
        evaluate.check_methods(["pds", "pds"])
    with pytest.raises(ValueError, match="unknown text_target 'captions'"):
        evaluate.check_text_target("captions")
    with pytest.raises(FileNotFoundError, match=r"resnet/model.safetensors not found: the toy encoder 'resnet'"):
        evaluate.check_image_encoders(["resnet"], "toy", tmp_path)


@pytest.mark.parametrize("key, value, message", [
    ("epochs", 0, "epochs=0 .*must be a whole number >= 1"), ("seeds", 0, "seeds=0"), ("lr", 0.0, "lr=0.0 .*> 0"),
    ("lr_image", -0.1, "lr_image=-0.1 .*>= 0"), ("full_one_per_image", 2, "must be 0 or 1"),
    ("batch_size", 2.5, "batch_size=2.5"), ("paper_lr", float("nan"), "paper_lr=nan"),
])
def test_numeric_settings_are_checked_with_their_key(key, value, message):
    good = {"epochs": 2, "full_epochs": 1, "lr": 0.1, "lr_image": 0.0, "batch_size": 8, "eval_every": 1,
            "full_one_per_image": 1, "full_seeds": 0, "paper_lr": 0.2, "paper_epochs": 3, "paper_lr_step": 2}
    evaluate.check_values(good | {"seeds": 1, "n_pairs": 4})
    with pytest.raises(ValueError, match=message) as e:
        evaluate.check_values(good | {key: value})
    assert f"(evaluate.{key})" in str(e.value)
    if key in evaluate.SETTINGS:  # the tm_evaluate stage's path checks them too
        with pytest.raises(ValueError, match=message):
            evaluate.protocol_settings(["field"], good | {key: value})
