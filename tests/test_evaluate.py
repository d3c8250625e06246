"""Evaluate stage: retrieval recall against a brute-force loop, the student's pieces, training-set
construction, epoch selection and the metrics.json shape, loaders and bad inputs."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from fakes import tiny_evaluation_data
from torch import nn

from pds import evaluate, models
from pds.models import ImageEncoder

# ----------------------------------------------------------------------------------------------------
# recall@K


def brute_force_recall(sim, txt2img, ks=(1, 5, 10)):
    """BLIP's itm_eval written as loops: ranks from a descending sort of each row / column."""
    n_img, n_txt = sim.shape
    tr_ranks = []
    for i in range(n_img):
        order = list(np.argsort(-sim[i]))
        tr_ranks.append(min(order.index(j) for j in range(n_txt) if txt2img[j] == i))
    ir_ranks = []
    for j in range(n_txt):
        order = list(np.argsort(-sim[:, j]))
        ir_ranks.append(order.index(txt2img[j]))
    out = {f"IR@{k}": 100 * np.mean([r < k for r in ir_ranks]) for k in ks}
    out |= {f"TR@{k}": 100 * np.mean([r < k for r in tr_ranks]) for k in ks}
    out["r_mean"] = np.mean([out[f"IR@{k}"] for k in ks] + [out[f"TR@{k}"] for k in ks])
    return out


@pytest.mark.parametrize("seed", range(4))
def test_recall_equals_brute_force_with_5_to_7_captions_per_image(seed):
    rng = np.random.default_rng(seed)
    n_img = 40
    per_image = rng.integers(5, 8, size=n_img)  # COCO: some images have 6 or 7 captions
    txt2img = rng.permutation(np.repeat(np.arange(n_img), per_image))
    # a weak signal so recalls land between 0 and 100
    sim = rng.normal(size=(n_img, len(txt2img))) + 1.5 * (txt2img[None, :] == np.arange(n_img)[:, None])
    got = evaluate.recall_at_k(sim.astype(np.float32), txt2img)
    want = brute_force_recall(sim.astype(np.float32), txt2img)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-9), k
    assert 0 < got["r_mean"] < 100


def test_recall_of_perfect_and_collapsed_scores():
    txt2img = np.repeat(np.arange(20), 5)
    perfect = (txt2img[None, :] == np.arange(20)[:, None]).astype(np.float32)
    assert evaluate.recall_at_k(perfect, txt2img)["r_mean"] == 100.0
    # a constant score must not count as a hit (ties rank the true item last)
    flat = evaluate.recall_at_k(np.zeros((20, 100), np.float32), txt2img, ks=(1, 5, 10))
    assert flat["IR@10"] == 0.0 and flat["TR@10"] == 0.0


def test_recall_refuses_images_without_captions_and_captions_without_images():
    sim = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="no caption"):
        evaluate.recall_at_k(sim, np.array([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="no image"):
        evaluate.recall_at_k(sim, np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="NaN"):
        evaluate.recall_at_k(np.full((3, 3), np.nan), np.array([0, 1, 2]))


# ----------------------------------------------------------------------------------------------------
# the student


def test_projection_head_and_loss_shapes():
    head = evaluate.ProjectionHead(12, 20)
    out = head(torch.randn(7, 12))
    assert out.shape == (7, 20)
    # LayerNorm output: zero mean, unit variance per row
    torch.testing.assert_close(out.mean(1), torch.zeros(7), atol=1e-5, rtol=0)
    assert [type(m).__name__ for m in head.children()] == ["Linear", "GELU", "Linear", "Dropout", "LayerNorm"]
    assert head.dropout.p == 0.1
    logits = torch.randn(6, 6)
    loss = evaluate.contrastive_loss(logits)
    target = torch.arange(6)
    manual = (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target)) / 2
    assert loss.shape == () and torch.isclose(loss, manual)
    with pytest.raises(ValueError, match="square"):
        evaluate.contrastive_loss(torch.randn(4, 5))


def test_student_logits_are_cosine_over_temperature():
    torch.manual_seed(0)
    student = evaluate.Student(nn.Flatten(), nn.Identity(), (0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255))
    images = torch.randint(0, 255, (4, 3, 2, 2), dtype=torch.uint8)
    text = torch.randn(5, 12)
    logits = student(images, text)
    assert logits.shape == (4, 5)
    assert logits.abs().max() <= 1 / evaluate.TEMPERATURE + 1e-4


def _retrieval_split(n_img=12, caps=(5, 6, 7), seed=0):
    rng = np.random.default_rng(seed)
    images = torch.randint(0, 256, (n_img, 3, 4, 4), dtype=torch.uint8)
    txt2img = np.repeat(np.arange(n_img), [caps[i % len(caps)] for i in range(n_img)])
    return images, txt2img, rng


def test_a_perfectly_aligned_student_gets_100_percent():
    images, txt2img, _ = _retrieval_split()
    # the text feature of a caption is its image's normalised pixels: image and text embeddings coincide
    text = images.reshape(len(images), -1).float().numpy()[txt2img]
    split = evaluate.RetrievalSet(images, text, txt2img)
    student = evaluate.Student(nn.Flatten(), nn.Identity(), (0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255))
    metrics, top = evaluate.evaluate_student(student, split, batch_size=5, top=5)
    assert metrics["r_mean"] == 100.0 and all(metrics[k] == 100.0 for k in evaluate.RECALLS)
    assert (top[:, 0] == txt2img).all() and top.shape == (len(txt2img), 5)


# ----------------------------------------------------------------------------------------------------
# training


def _toy_encoder(d=8, size=4):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, d))
    return ImageEncoder(model, "tiny", d, size, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "")


def _tiny_problem(seed=0, n_img=10, dt=6):
    """Images whose class (0..4) is readable from the pixels; text features = a class code + noise."""
    rng = np.random.default_rng(seed)
    cls = np.arange(n_img) % 5
    images = torch.from_numpy((rng.integers(0, 60, (n_img, 3, 4, 4)) + 40 * cls[:, None, None, None]).astype(np.uint8))
    codes = rng.normal(size=(5, dt))
    txt2img = np.repeat(np.arange(n_img), 2)
    text = (codes[cls[txt2img]] + 0.05 * rng.normal(size=(len(txt2img), dt))).astype(np.float32)
    return evaluate.RetrievalSet(images, text, txt2img)


def test_training_is_deterministic_and_learns_a_tiny_problem():
    split = _tiny_problem()
    train = evaluate.PairSet(split.images, split.txt2img, split.text)
    runs = [evaluate.train_student(_toy_encoder(), train, split, split, epochs=20, lr=0.1, lr_image=0.1,
                                   batch_size=8, eval_every=10, seed=3) for _ in range(2)]
    h = runs[0].history
    pd.testing.assert_frame_equal(h, runs[1].history)
    assert h["epoch"].tolist() == [0, 0, 10, 10, 20, 20] and h["split"].tolist() == ["val", "test"] * 3
    val = h[h["split"] == "val"].set_index("epoch")
    assert val.loc[20, "loss"] < np.log(8)  # below chance for batches of 8
    assert val.loc[20, "r_mean"] > val.loc[0, "r_mean"]
    assert runs[0].test_top.shape == (len(split.txt2img), 5)


def _conv_encoder(size=4):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GroupNorm(4, 4), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten())
    return ImageEncoder(model, "tiny-conv", 4 * (size // 2) ** 2, size, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "")


def test_channels_last_changes_speed_not_results():
    split = _tiny_problem()
    train = evaluate.PairSet(split.images, split.txt2img, split.text)
    h = [evaluate.train_student(_conv_encoder(), train, split, split, epochs=10, lr=0.1, lr_image=0.1, batch_size=8,
                                eval_every=5, seed=3, channels_last=cl).history for cl in (False, True)]
    # the same arithmetic in another order: equal within float rounding, not bit for bit
    np.testing.assert_allclose(h[0]["loss"].to_numpy(), h[1]["loss"].to_numpy(), rtol=1e-4, equal_nan=True)
    assert h[0]["r_mean"].tolist() == h[1]["r_mean"].tolist()


def test_soft_targets_train_with_wbce_on_each_batch_block(monkeypatch):
    split = _tiny_problem()
    n = len(split.txt2img)
    seen = []
    real = evaluate.wbce_loss

    def spy(logits, target):
        seen.append(target.clone())
        return real(logits, target)

    monkeypatch.setattr(evaluate, "wbce_loss", spy)
    soft = np.eye(n, dtype=np.float32) + 0.01 * np.arange(n * n, dtype=np.float32).reshape(n, n)
    train = evaluate.PairSet(split.images, split.txt2img, split.text, soft)
    soft_run = evaluate.train_student(_toy_encoder(), train, split, split, epochs=2, lr=0.1, lr_image=0.1,
                                      batch_size=8, eval_every=1, seed=3)
    assert len(seen) == 2 * int(np.ceil(n / 8))  # every step of both epochs
    gen = torch.Generator().manual_seed(3)  # the first batch of the first epoch, as train_student draws it
    b = evaluate.epoch_order(split.txt2img, gen, False)[:8].numpy()
    np.testing.assert_array_equal(seen[0].numpy(), soft[np.ix_(b, b)])
    hard = evaluate.train_student(_toy_encoder(), evaluate.PairSet(split.images, split.txt2img, split.text), split,
                                  split, epochs=2, lr=0.1, lr_image=0.1, batch_size=8, eval_every=1, seed=3)
    assert soft_run.history["loss"].iloc[-1] != hard.history["loss"].iloc[-1]  # InfoNCE without them
    with pytest.raises(ValueError, match="soft targets are"):
        evaluate.train_student(_toy_encoder(), evaluate.PairSet(split.images, split.txt2img, split.text, soft[:3, :3]),
                               split, split, epochs=1, lr=0.1, lr_image=0.1, batch_size=8, eval_every=1, seed=3)


def test_one_pair_per_image_epochs():
    image_index = np.repeat(np.arange(6), [1, 2, 3, 5, 5, 7])
    gen = torch.Generator().manual_seed(0)
    order = evaluate.epoch_order(image_index, gen, one_per_image=True).numpy()
    assert sorted(image_index[order]) == list(range(6))  # each image exactly once
    every = evaluate.epoch_order(image_index, gen, one_per_image=False).numpy()
    assert sorted(every) == list(range(len(image_index)))


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


def test_empty_training_set_is_refused():
    split = _tiny_problem()
    empty = evaluate.PairSet(split.images, np.zeros(0, np.int64), np.zeros((0, 6), np.float32))
    with pytest.raises(ValueError, match="empty"):
        evaluate.train_student(_toy_encoder(), empty, split, split, 2, 0.1, 0.1, 8, 1, 0)


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
                    m = {k: r + (1 if method == "pds" else 0) for k in evaluate.METRICS}
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


def _bn_encoder():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 8), nn.BatchNorm1d(8))
    return ImageEncoder(model, "tiny", 8, 4, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "")


def test_paper_protocol_trains_only_the_text_head_and_leaves_the_encoder_untouched():
    rng = np.random.default_rng(0)
    ev = _paper_data(rng)
    clip_text = rng.normal(size=(40, 5)).astype(np.float32)  # another text space (the CLIP side)
    ev = evaluate.with_text(ev, clip_text, clip_text[:3] + 1.0)
    enc = _bn_encoder()
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


def test_train_student_with_frozen_embeddings_matches_a_head_only_reference():
    """encoder=None trains exactly a ProjectionHead on fixed normalised embeddings with plain SGD."""
    split = _tiny_problem()
    emb = torch.randn(len(split.images), 8)
    frozen = evaluate.RetrievalSet(emb, split.text, split.txt2img)
    train = evaluate.PairSet(emb, split.txt2img, split.text)
    got = evaluate.train_student(None, train, frozen, frozen, epochs=3, lr=0.2, lr_image=0.0, batch_size=8,
                                 eval_every=3, seed=5, lr_step=2)
    torch.manual_seed(5)
    gen = torch.Generator().manual_seed(5)
    head = evaluate.ProjectionHead(split.text.shape[1], 8).train()
    opt = torch.optim.SGD(head.parameters(), lr=0.2, momentum=0.9, weight_decay=5e-4)
    text = torch.from_numpy(split.text)
    for epoch in range(1, 4):
        perm = evaluate.epoch_order(split.txt2img, gen, False)
        for lo in range(0, len(perm), 8):
            b = perm[lo:lo + 8]
            img = nn.functional.normalize(emb[split.txt2img[b.numpy()]], dim=-1)
            logits = img @ nn.functional.normalize(head(text[b]), dim=-1).T / evaluate.TEMPERATURE
            loss = evaluate.contrastive_loss(logits)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if epoch == 2:  # lr x0.1 after lr_step
            for g in opt.param_groups:
                g["lr"] *= 0.1
    head.eval()
    with torch.no_grad():
        sim = nn.functional.normalize(emb, dim=-1) @ nn.functional.normalize(head(text), dim=-1).T
    want = evaluate.recall_at_k(sim.numpy(), split.txt2img)
    last = got.history[(got.history.epoch == 3) & (got.history.split == "test")].iloc[0]
    assert last["r_mean"] == pytest.approx(want["r_mean"])


def test_frozen_embeddings_are_the_eval_mode_outputs():
    enc = _bn_encoder()
    enc.model.train()
    pixels = torch.randint(0, 256, (7, 3, 4, 4), dtype=torch.uint8)
    got = evaluate.frozen_embeddings(enc, pixels, batch_size=3)
    x = (pixels.float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        want = enc.model.eval()(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


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


def test_full_seeds_trains_the_full_bound_for_the_first_seeds_only(monkeypatch):
    """evaluate.full_seeds: the costliest student (every pair) for fewer seeds; every other method keeps them all,
    and metrics.json says how many seeds each entry averages."""
    calls = []

    def fake_run(ev, load_encoder, settings, method, encoder, seed, ids):
        calls.append((method, seed))
        hist = pd.DataFrame([{"protocol": settings.protocol, "method": method, "image_encoder": encoder, "seed": seed,
                              "n_train": 1, "epochs": 1, "epoch": e, "split": split, "loss": 0.0, "seconds": 0.0,
                              **{k: float(seed) for k in evaluate.METRICS}} for e in (0, 1) for split in ("val", "test")])
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
