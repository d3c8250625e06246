"""The contrastive student (`pds.contrastive`): retrieval recall against a brute-force loop, the student's pieces,
its losses (InfoNCE, LoRS's WBCE on soft targets), training one student, its layout and bad inputs."""

import numpy as np
import pandas as pd
import pytest
import torch
from fakes import bn_encoder
from torch import nn

from pds import contrastive
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
    got = contrastive.recall_at_k(sim.astype(np.float32), txt2img)
    want = brute_force_recall(sim.astype(np.float32), txt2img)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-9), k
    assert 0 < got["r_mean"] < 100


def test_recall_of_perfect_and_collapsed_scores():
    txt2img = np.repeat(np.arange(20), 5)
    perfect = (txt2img[None, :] == np.arange(20)[:, None]).astype(np.float32)
    assert contrastive.recall_at_k(perfect, txt2img)["r_mean"] == 100.0
    # a constant score must not count as a hit (ties rank the true item last)
    flat = contrastive.recall_at_k(np.zeros((20, 100), np.float32), txt2img, ks=(1, 5, 10))
    assert flat["IR@10"] == 0.0 and flat["TR@10"] == 0.0


def test_recall_refuses_images_without_captions_and_captions_without_images():
    sim = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="no caption"):
        contrastive.recall_at_k(sim, np.array([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="no image"):
        contrastive.recall_at_k(sim, np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="NaN"):
        contrastive.recall_at_k(np.full((3, 3), np.nan), np.array([0, 1, 2]))


# ----------------------------------------------------------------------------------------------------
# the student


def test_projection_head_and_loss_shapes():
    head = contrastive.ProjectionHead(12, 20)
    out = head(torch.randn(7, 12))
    assert out.shape == (7, 20)
    # LayerNorm output: zero mean, unit variance per row
    torch.testing.assert_close(out.mean(1), torch.zeros(7), atol=1e-5, rtol=0)
    assert [type(m).__name__ for m in head.children()] == ["Linear", "GELU", "Linear", "Dropout", "LayerNorm"]
    assert head.dropout.p == 0.1
    logits = torch.randn(6, 6)
    loss = contrastive.contrastive_loss(logits)
    target = torch.arange(6)
    manual = (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target)) / 2
    assert loss.shape == () and torch.isclose(loss, manual)
    with pytest.raises(ValueError, match="square"):
        contrastive.contrastive_loss(torch.randn(4, 5))


def test_student_logits_are_cosine_over_temperature():
    torch.manual_seed(0)
    student = contrastive.Student(nn.Flatten(), nn.Identity(), (0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255))
    images = torch.randint(0, 255, (4, 3, 2, 2), dtype=torch.uint8)
    text = torch.randn(5, 12)
    logits = student(images, text)
    assert logits.shape == (4, 5)
    assert logits.abs().max() <= 1 / contrastive.TEMPERATURE + 1e-4


def _retrieval_split(n_img=12, caps=(5, 6, 7), seed=0):
    rng = np.random.default_rng(seed)
    images = torch.randint(0, 256, (n_img, 3, 4, 4), dtype=torch.uint8)
    txt2img = np.repeat(np.arange(n_img), [caps[i % len(caps)] for i in range(n_img)])
    return images, txt2img, rng


def test_a_perfectly_aligned_student_gets_100_percent():
    images, txt2img, _ = _retrieval_split()
    # the text feature of a caption is its image's normalised pixels: image and text embeddings coincide
    text = images.reshape(len(images), -1).float().numpy()[txt2img]
    split = contrastive.RetrievalSet(images, text, txt2img)
    student = contrastive.Student(nn.Flatten(), nn.Identity(), (0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255))
    metrics, top = contrastive.evaluate_student(student, split, batch_size=5, top=5)
    assert metrics["r_mean"] == 100.0 and all(metrics[k] == 100.0 for k in contrastive.RECALLS)
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
    return contrastive.RetrievalSet(images, text, txt2img)


def test_training_is_deterministic_and_learns_a_tiny_problem():
    split = _tiny_problem()
    train = contrastive.PairSet(split.images, split.txt2img, split.text)
    runs = [contrastive.train_student(_toy_encoder(), train, split, split, epochs=20, lr=0.1, lr_image=0.1,
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
    train = contrastive.PairSet(split.images, split.txt2img, split.text)
    h = [contrastive.train_student(_conv_encoder(), train, split, split, epochs=10, lr=0.1, lr_image=0.1, batch_size=8,
                                eval_every=5, seed=3, channels_last=cl).history for cl in (False, True)]
    # the same arithmetic in another order: equal within float rounding, not bit for bit
    np.testing.assert_allclose(h[0]["loss"].to_numpy(), h[1]["loss"].to_numpy(), rtol=1e-4, equal_nan=True)
    assert h[0]["r_mean"].tolist() == h[1]["r_mean"].tolist()


def test_soft_targets_train_with_wbce_on_each_batch_block(monkeypatch):
    split = _tiny_problem()
    n = len(split.txt2img)
    seen = []
    real = contrastive.wbce_loss

    def spy(logits, target):
        seen.append(target.clone())
        return real(logits, target)

    monkeypatch.setattr(contrastive, "wbce_loss", spy)
    soft = np.eye(n, dtype=np.float32) + 0.01 * np.arange(n * n, dtype=np.float32).reshape(n, n)
    train = contrastive.PairSet(split.images, split.txt2img, split.text, soft)
    soft_run = contrastive.train_student(_toy_encoder(), train, split, split, epochs=2, lr=0.1, lr_image=0.1,
                                      batch_size=8, eval_every=1, seed=3)
    assert len(seen) == 2 * int(np.ceil(n / 8))  # every step of both epochs
    gen = torch.Generator().manual_seed(3)  # the first batch of the first epoch, as train_student draws it
    b = contrastive.epoch_order(split.txt2img, gen, False)[:8].numpy()
    np.testing.assert_array_equal(seen[0].numpy(), soft[np.ix_(b, b)])
    hard = contrastive.train_student(_toy_encoder(), contrastive.PairSet(split.images, split.txt2img, split.text), split,
                                  split, epochs=2, lr=0.1, lr_image=0.1, batch_size=8, eval_every=1, seed=3)
    assert soft_run.history["loss"].iloc[-1] != hard.history["loss"].iloc[-1]  # InfoNCE without them
    with pytest.raises(ValueError, match="soft targets are"):
        contrastive.train_student(_toy_encoder(), contrastive.PairSet(split.images, split.txt2img, split.text, soft[:3, :3]),
                               split, split, epochs=1, lr=0.1, lr_image=0.1, batch_size=8, eval_every=1, seed=3)


def test_one_pair_per_image_epochs():
    image_index = np.repeat(np.arange(6), [1, 2, 3, 5, 5, 7])
    gen = torch.Generator().manual_seed(0)
    order = contrastive.epoch_order(image_index, gen, one_per_image=True).numpy()
    assert sorted(image_index[order]) == list(range(6))  # each image exactly once
    every = contrastive.epoch_order(image_index, gen, one_per_image=False).numpy()
    assert sorted(every) == list(range(len(image_index)))


def test_empty_training_set_is_refused():
    split = _tiny_problem()
    empty = contrastive.PairSet(split.images, np.zeros(0, np.int64), np.zeros((0, 6), np.float32))
    with pytest.raises(ValueError, match="empty"):
        contrastive.train_student(_toy_encoder(), empty, split, split, 2, 0.1, 0.1, 8, 1, 0)


def test_train_student_with_frozen_embeddings_matches_a_head_only_reference():
    """encoder=None trains exactly a ProjectionHead on fixed normalised embeddings with plain SGD."""
    split = _tiny_problem()
    emb = torch.randn(len(split.images), 8)
    frozen = contrastive.RetrievalSet(emb, split.text, split.txt2img)
    train = contrastive.PairSet(emb, split.txt2img, split.text)
    got = contrastive.train_student(None, train, frozen, frozen, epochs=3, lr=0.2, lr_image=0.0, batch_size=8,
                                 eval_every=3, seed=5, lr_step=2)
    torch.manual_seed(5)
    gen = torch.Generator().manual_seed(5)
    head = contrastive.ProjectionHead(split.text.shape[1], 8).train()
    opt = torch.optim.SGD(head.parameters(), lr=0.2, momentum=0.9, weight_decay=5e-4)
    text = torch.from_numpy(split.text)
    for epoch in range(1, 4):
        perm = contrastive.epoch_order(split.txt2img, gen, False)
        for lo in range(0, len(perm), 8):
            b = perm[lo:lo + 8]
            img = nn.functional.normalize(emb[split.txt2img[b.numpy()]], dim=-1)
            logits = img @ nn.functional.normalize(head(text[b]), dim=-1).T / contrastive.TEMPERATURE
            loss = contrastive.contrastive_loss(logits)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if epoch == 2:  # lr x0.1 after lr_step
            for g in opt.param_groups:
                g["lr"] *= 0.1
    head.eval()
    with torch.no_grad():
        sim = nn.functional.normalize(emb, dim=-1) @ nn.functional.normalize(head(text), dim=-1).T
    want = contrastive.recall_at_k(sim.numpy(), split.txt2img)
    last = got.history[(got.history.epoch == 3) & (got.history.split == "test")].iloc[0]
    assert last["r_mean"] == pytest.approx(want["r_mean"])


def test_frozen_embeddings_are_the_eval_mode_outputs():
    enc = bn_encoder()
    enc.model.train()
    pixels = torch.randint(0, 256, (7, 3, 4, 4), dtype=torch.uint8)
    got = contrastive.frozen_embeddings(enc, pixels, batch_size=3)
    x = (pixels.float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        want = enc.model.eval()(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
