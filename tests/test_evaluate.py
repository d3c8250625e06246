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

from pds import contrastive, evaluate, models, results, trainsets


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
    assert trainsets.nearest_real_images(protos, clip_image, images).tolist() == [2, 5, 0]
    protos_val = np.eye(8)[[6]]  # image 6 is a val image: the nearest train image is another one
    assert trainsets.nearest_real_images(protos_val, clip_image, images)[0] in range(6)


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
        ids = trainsets.select_pairs(method, captions, clip_image, clip_text, n_pairs=7, seed=0)
        assert len(ids) == len(set(ids)) == 7 and set(ids) <= train_ids, method
    assert set(trainsets.select_pairs("full", captions, clip_image, clip_text, 7, 0)) == train_ids
    with pytest.raises(ValueError, match="budget"):
        trainsets.select_pairs("random", captions, clip_image, clip_text, n_pairs=31, seed=0)
    with pytest.raises(ValueError, match="unknown baseline"):
        trainsets.select_pairs("forgetting", captions, clip_image, clip_text, 7, 0)
    with pytest.raises(ValueError, match="no train-split"):
        trainsets.select_pairs("random", captions[captions.split != "train"], clip_image, clip_text, 7, 0)


def test_pds_text_targets_are_member_means_with_caption_fallback():
    feats = np.random.default_rng(0).normal(size=(12, 3)).astype(np.float32)
    members = pd.DataFrame({"prototype": [0, 0, 0, 2], "caption_id": [1, 4, 5, 9]})
    prompts = np.array([4, 7, 9])
    got, n_fallback = trainsets.pds_text_targets(members, prompts, feats, "prototype")
    np.testing.assert_allclose(got[0], feats[[1, 4, 5]].mean(0), rtol=1e-6)
    np.testing.assert_allclose(got[1], feats[7])  # no members: the retrieved caption
    np.testing.assert_allclose(got[2], feats[9])
    assert n_fallback == 1 and got.dtype == np.float32
    got, _ = trainsets.pds_text_targets(members, prompts, feats, "caption")
    np.testing.assert_allclose(got, feats[prompts])
    with pytest.raises(ValueError, match="text_target"):
        trainsets.pds_text_targets(members, prompts, feats, "mean")
    with pytest.raises(ValueError, match="empty"):
        trainsets.pds_text_targets(members, np.zeros(0, np.int64), feats)


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
    np.testing.assert_array_equal(trainsets.clip_text_targets(synthetic, prototype_text, prompts, clip_text),
                                  prototype_text[[2, 0, 3]])
    np.testing.assert_array_equal(trainsets.clip_text_targets(synthetic, prototype_text, prompts, clip_text, "caption"),
                                  clip_text[[11, 3, 20]])
    with pytest.raises(ValueError, match="-d"):
        trainsets.clip_text_targets(synthetic, prototype_text, prompts, clip_text[:, :4])
    with pytest.raises(ValueError, match="outside"):
        trainsets.clip_text_targets(synthetic.assign(prototype=[0, 1, 4]), prototype_text, prompts, clip_text)


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
    monkeypatch.setattr(trainsets, "select_pairs", lambda m, *a: np.arange(3))
    settings = evaluate.TrainSettings(1, 1, 0.1, 0.0, 2, 1, full_seeds=1)
    runs, _ = evaluate.run_evaluation(SimpleNamespace(synthetic=None, pds_real=None, pds_text=None, captions=None),
                                      ["random", "full"], ["convnet"], None, None, None, 3, [42, 43, 44], settings)
    assert calls == [("random", 42), ("random", 43), ("random", 44), ("full", 42)]
    seeds = results.rows(results.summarise(runs, "toy", 3)).set_index("method")["n"].to_dict()
    assert seeds == {"random": 3, "full": 1}  # each entry says how many seeds it averages
    with pytest.raises(ValueError, match="full_seeds=-1"):
        evaluate.TrainSettings(1, 1, 0.1, 0.0, 2, 1, full_seeds=-1)


def _control_world(n_train=12, per=4, seed=0):
    """n_train train images (and 2 val, 2 test) with `per` captions each, CLIP image embeddings, caption
    features, and a keep mask that drops about a quarter of the train pairs (whole images too)."""
    rng = np.random.default_rng(seed)
    split = ["train"] * n_train + ["val", "val", "test", "test"]
    image_id = np.repeat(np.arange(len(split)), per)
    captions = pd.DataFrame({"caption_id": np.arange(len(image_id)), "image_id": image_id,
                             "split": [split[i] for i in image_id], "caption": [f"c{k}" for k in range(len(image_id))]})
    clip_image = rng.normal(size=(len(split), 5))
    feats = rng.normal(size=(len(captions), 3)).astype(np.float32)
    keep = rng.random(n_train * per) > 0.25
    keep[:per] = False  # image 0 loses every pair
    return captions, clip_image, feats, keep


def _naive_targets(method, captions, clip_image, feats, keep, ids, k):
    """Each control pair's text target by plain loops over the kept train pairs."""
    train = captions[captions.split == "train"].reset_index(drop=True)
    kept = [j for j in range(len(train)) if keep[j]]
    out = []
    for cid in ids:
        img = int(captions.image_id[cid])
        if method == "random_avg":
            group = [int(train.caption_id[j]) for j in kept if int(train.image_id[j]) == img]
        else:
            q = clip_image[img] / np.linalg.norm(clip_image[img])
            scored = []
            for j in kept:
                x = clip_image[int(train.image_id[j])]
                cos = np.inf if int(train.caption_id[j]) == cid else float(q @ (x / np.linalg.norm(x)))
                scored.append((-cos, j))
            group = [int(train.caption_id[j]) for _, j in sorted(scored)[:k]]
        assert cid in group
        out.append(np.mean([feats[g].astype(np.float64) for g in group], axis=0))
    return np.array(out)


def test_random_kept_draws_random_from_the_kept_pool_only():
    captions, clip_image, feats, keep = _control_world()
    train_ids = captions.caption_id[captions.split == "train"].to_numpy()
    pool = train_ids[keep]
    for seed in range(5):
        ids = trainsets.select_pairs("random_kept", captions, clip_image, None, 6, seed, keep)
        naive = [pool[p] for p in sorted(np.random.default_rng(seed).choice(len(pool), 6, replace=False))]
        assert ids.tolist() == naive and set(ids) <= set(pool)
    for method in ("random_avg", "random_nbr"):  # one selection for both: kept pairs of distinct images
        ids = trainsets.select_pairs(method, captions, clip_image, None, 6, 3, keep)
        assert set(ids) <= set(pool) and captions.image_id[ids].nunique() == 6
    assert (trainsets.select_pairs("random_avg", captions, clip_image, None, 6, 3, keep)
            == trainsets.select_pairs("random_nbr", captions, clip_image, None, 6, 3, keep)).all()
    everything = np.ones_like(keep)  # a filter that drops nothing (rm_ratio 0): random_kept is random
    for seed in range(3):
        assert (trainsets.select_pairs("random_kept", captions, clip_image, None, 6, seed, everything)
                == trainsets.select_pairs("random", captions, clip_image, None, 6, seed)).all()
    with pytest.raises(ValueError, match="keep mask"):
        trainsets.select_pairs("random_kept", captions, clip_image, None, 6, 0)
    with pytest.raises(ValueError, match="one entry per training pair"):
        trainsets.select_pairs("random_kept", captions, clip_image, None, 6, 0, keep[1:])


@pytest.mark.parametrize("method", ["random_avg", "random_nbr"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_control_targets_match_naive_reference(method, seed):
    captions, clip_image, feats, keep = _control_world(seed=seed)
    ids = trainsets.select_pairs(method, captions, clip_image, None, 5, seed, keep)
    members = trainsets.control_members(method, captions, clip_image, keep, ids, n_neighbours=6)
    got, n_fallback = trainsets.pds_text_targets(members, ids, feats)
    assert n_fallback == 0
    np.testing.assert_allclose(got, _naive_targets(method, captions, clip_image, feats, keep, ids, 6), rtol=1e-6, atol=1e-6)


def test_random_nbr_with_one_neighbour_is_the_pair_itself_and_refuses_a_bad_k():
    captions, clip_image, feats, keep = _control_world()
    ids = trainsets.select_pairs("random_nbr", captions, clip_image, None, 5, 0, keep)
    members = trainsets.control_members("random_nbr", captions, clip_image, keep, ids, n_neighbours=1)
    assert members.caption_id.tolist() == ids.tolist()
    for k in (0, int(keep.sum()) + 1):
        with pytest.raises(ValueError, match="n_neighbours"):
            trainsets.control_members("random_nbr", captions, clip_image, keep, ids, n_neighbours=k)
    dropped = captions.caption_id[captions.split == "train"].to_numpy()[~keep][:1]
    with pytest.raises(ValueError, match="kept training pairs"):
        trainsets.control_members("random_avg", captions, clip_image, keep, dropped)


def test_median_intersection_size_counts_members_per_prototype():
    members = pd.DataFrame({"prototype": [0] * 5 + [1] * 2 + [3] * 9 + [4] * 4, "caption_id": range(20)})
    counts = [sum(1 for p in members.prototype if p == q) for q in sorted(set(members.prototype))]
    assert trainsets.median_intersection_size(members) == round(float(np.median(counts))) == 4
    with pytest.raises(ValueError, match="no member pairs"):
        trainsets.median_intersection_size(members.iloc[:0])


def test_run_evaluation_trains_the_controls_on_their_targets_in_each_protocols_text_space(monkeypatch):
    """The controls reach the student with their averaged targets taken from ev's text features (so the paper's
    protocol averages CLIP's), and every other method exactly as before (no text argument)."""
    captions, clip_image, feats, keep = _control_world()
    calls = {}

    def fake_run(ev, load_encoder, settings, method, encoder, seed, ids, text=None):
        calls[(method, seed)] = (ids, text)
        hist = pd.DataFrame([{"protocol": settings.protocol, "method": method, "image_encoder": encoder, "seed": seed,
                              "n_train": 1, "epochs": 1, "epoch": 0, "split": split, "loss": 0.0, "seconds": 0.0,
                              **dict.fromkeys(contrastive.METRICS, 0.0)} for split in ("val", "test")])
        return hist, None

    monkeypatch.setattr(evaluate, "run_student", fake_run)
    settings = evaluate.TrainSettings(1, 1, 0.1, 0.0, 2, 1)
    methods = ["random", "random_kept", "random_avg", "random_nbr"]
    for space in (feats, 2.0 * feats + 1.0):  # e.g. the student's caption features, then CLIP's
        ev = SimpleNamespace(synthetic=None, pds_real=None, pds_text=None, captions=captions, text_features=space)
        evaluate.run_evaluation(ev, methods, ["convnet"], None, clip_image, None, 5, [7, 8], settings,
                                progress=False, keep=keep, n_neighbours=3)
        for seed in (7, 8):
            assert calls[("random", seed)][1] is None and calls[("random_kept", seed)][1] is None
            assert calls[("random", seed)][0].tolist() == trainsets.select_pairs("random", captions, None, None, 5, seed).tolist()
            for m in ("random_avg", "random_nbr"):
                ids, text = calls[(m, seed)]
                np.testing.assert_allclose(text, _naive_targets(m, captions, clip_image, space, keep, ids, 3),
                                           rtol=1e-6, atol=1e-6)


def test_run_student_trains_on_given_targets():
    """A control's targets replace its pairs' caption features; the images stay the pairs'."""
    rng = np.random.default_rng(0)
    ev = _paper_data(rng)
    ids = trainsets.select_pairs("random", ev.captions, None, None, 4, 0)
    seen = []
    real = evaluate.train_student

    def spy(encoder, train, *a, **k):
        seen.append(train)
        return real(encoder, train, *a, **k)

    settings = evaluate.TrainSettings(epochs=1, full_epochs=1, lr=0.05, lr_image=0.0, batch_size=4, eval_every=1,
                                      protocol="paper")
    pev = evaluate.frozen_embedding_data(ev, bn_encoder(), 10)
    text = rng.normal(size=(4, ev.text_features.shape[1])).astype(np.float32)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(evaluate, "train_student", spy)
        evaluate.run_student(pev, None, settings, "random_avg", "convnet", 0, ids, text)
        evaluate.run_student(pev, None, settings, "random", "convnet", 0, ids)
    assert (seen[0].text == text).all() and (seen[1].text == pev.text_features[ids]).all()
    assert (seen[0].image_index == seen[1].image_index).all()


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
