"""Trajectory matching (pds.tm): expert trajectories, MTT-VL / LoRS matching losses against a hand-unrolled
reference and finite differences, determinism, bad settings, and the command line on tiny fake data."""

import copy
import functools
import json

import numpy as np
import pytest
import torch
from torch import nn

from pds import artifacts, contrastive, data, text_features, tm
from pds.contrastive import PairSet
from pds.models import ImageEncoder

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _tiny_conv(seed=0, width=4):
    """A two-layer ConvNet-like encoder on 8x8 images (GroupNorm, as the toy ConvNet): 4 * 2 * 2 = 16 features."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.GroupNorm(width, width), nn.ReLU(),
                         nn.AvgPool2d(2), nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(width, width),
                         nn.ReLU(), nn.AvgPool2d(2), nn.Flatten())


def _encoder_copy(base):
    return ImageEncoder(copy.deepcopy(base), "tiny", 16, 8, MEAN, STD, "")


def _factory(base):
    return functools.partial(_encoder_copy, base)  # picklable, for worker processes


def _tiny_pairs(seed=0, n_img=24, per_image=2, dt=6):
    """Images whose class (0..3) shows in the pixels; captions = class code + noise."""
    rng = np.random.default_rng(seed)
    cls = np.arange(n_img) % 4
    images = torch.from_numpy((rng.integers(0, 80, (n_img, 3, 8, 8)) + 50 * cls[:, None, None, None]).astype(np.uint8))
    index = np.repeat(np.arange(n_img), per_image)
    codes = rng.normal(size=(4, dt))
    text = (codes[cls[index]] + 0.3 * rng.normal(size=(len(index), dt))).astype(np.float32)
    return PairSet(images, index, text)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Single-threaded, as the pilot runs: tiny graphs gain nothing from a second thread on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(one_thread):
    train = _tiny_pairs()
    base = _tiny_conv()
    experts = tm.train_experts(_factory(base), train, n_experts=2, epochs=3, batch_size=8, seed=0)
    return base, train, experts


FAST = tm.MatchSettings(iterations=0, syn_steps=3, expert_epochs=1, max_start_epoch=2, mini_batch=4, lr_img=10,
                        lr_txt=10, lr_lr=0.01, rank=2, alpha=1.0, lr_sim=1.0)


# ----------------------------------------------------------------------------------------------------
# experts


def test_experts_shape_start_and_determinism(tiny):
    base, train, experts = tiny
    net = tm.build_network(copy.deepcopy(base), 16, 6)
    layout = tm.param_layout(net)
    assert experts.params.shape == (2, 4, layout.size) and experts.params.dtype == np.float32
    assert experts.n_image_params == layout.n_image and experts.losses.shape == (2, 3)
    # every expert starts from the same (pretrained) image encoder, with its own text head
    start = experts.params[:, 0]
    np.testing.assert_array_equal(start[0, :layout.n_image], tm.flatten_params(net)[:layout.n_image].numpy())
    np.testing.assert_array_equal(start[0, :layout.n_image], start[1, :layout.n_image])
    assert not np.array_equal(start[0, layout.n_image:], start[1, layout.n_image:])
    assert (np.abs(np.diff(experts.params, axis=1)).sum(axis=2) > 0).all()  # every epoch moved
    assert experts.losses[:, -1].mean() < experts.losses[:, 0].mean()  # the experts learn
    torch.manual_seed(123)  # the global RNG must not matter
    again = tm.train_experts(_factory(base), train, n_experts=2, epochs=3, batch_size=8, seed=0)
    np.testing.assert_array_equal(again.params, experts.params)
    other = tm.train_experts(_factory(base), train, n_experts=2, epochs=3, batch_size=8, seed=1)
    assert not np.array_equal(other.params, experts.params)


@pytest.mark.slow  # two spawned processes import torch: about 30 s on a loaded 2-core machine
def test_experts_in_worker_processes_equal_one_process(tiny):
    base, train, experts = tiny
    again = tm.train_experts(_factory(base), train, n_experts=2, epochs=3, batch_size=8, seed=0, workers=2)
    np.testing.assert_array_equal(again.params, experts.params)
    np.testing.assert_array_equal(again.losses, experts.losses)


def test_save_and_load_experts(tiny, tmp_path):
    _, _, experts = tiny
    tm.save_experts(tmp_path, experts)
    back = tm.load_experts(tmp_path)
    np.testing.assert_array_equal(back.params, experts.params)
    assert (back.n_image_params, back.encoder, back.text_dim, back.mean) == \
           (experts.n_image_params, experts.encoder, experts.text_dim, experts.mean)
    np.testing.assert_allclose(back.losses, experts.losses, atol=1e-6)
    meta = json.loads((tmp_path / "experts.json").read_text())
    meta["epochs"] = 7
    (tmp_path / "experts.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"experts.json is not the file run .* of experts wrote.*pds.tm experts"):
        tm.load_experts(tmp_path)  # edited after its run: the manifest tells
    artifacts.write_manifest(tmp_path, "experts", [tm.EXPERTS_NPY, tm.EXPERTS_JSON])  # made consistent by hand
    with pytest.raises(ValueError, match="re-run experts"):
        tm.load_experts(tmp_path)


# ----------------------------------------------------------------------------------------------------
# the matching loss against a hand-unrolled reference


def _naive_forward(p, x, y, temperature=0.07):
    """Linear image encoder + ProjectionHead (no dropout) written out on plain tensors."""
    w_i, b_i, w1, b1, w2, b2, g, beta = p
    f = x.flatten(1) @ w_i.T + b_i
    proj = y @ w1.T + b1
    h = torch.nn.functional.gelu(proj) @ w2.T + b2 + proj
    mu = h.mean(1, keepdim=True)
    var = ((h - mu) ** 2).mean(1, keepdim=True)
    z = (h - mu) / torch.sqrt(var + 1e-5) * g + beta
    f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)
    z = z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return f @ z.T / temperature


def _naive_infonce(logits):
    n = len(logits)
    diag = logits[range(n), range(n)]
    return ((torch.logsumexp(logits, 1) - diag).mean() + (torch.logsumexp(logits, 0) - diag).mean()) / 2


def _naive_wbce(logits, s):
    p = torch.sigmoid(logits)
    loss = -(s * torch.log(p) + (1 - s) * torch.log(1 - p))
    pos = s > 0.5
    return (loss[pos].mean() + loss[~pos].mean()) / 2


def _naive_matching(params, n_img_tensors, target, images, text, lrs, batches, sim=None):
    """The unroll and the normalised loss with torch.autograd.grad on a list of plain tensors."""
    p = [q.clone().requires_grad_(True) for q in params]
    for idx in batches:
        logits = _naive_forward(p, images[idx], text[idx])
        if sim is None:
            loss = _naive_infonce(logits)
        else:
            a, left, right, scale = sim
            loss = _naive_wbce(logits, torch.diag(a[idx]) + left[idx] @ right[idx].T * scale)
        grads = torch.autograd.grad(loss, p, create_graph=True)
        p = [q - (lrs[0] if i < n_img_tensors else lrs[1]) * g for i, (q, g) in enumerate(zip(p, grads, strict=True))]

    def dist(a, b, sl):
        return sum(((a[i] - b[i]) ** 2).sum() for i in sl)

    img, txt = range(n_img_tensors), range(n_img_tensors, len(p))
    return dist(p, target, img) / dist(params, target, img) + dist(p, target, txt) / dist(params, target, txt)


def _linear_problem(seed=0, m=6, dt=3, d=5):
    torch.manual_seed(seed)
    net = tm.build_network(nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 2, d)), d, dt, dropout=0.0).double()
    layout = tm.param_layout(net)
    start = tm.flatten_params(net)
    target = start + 0.05 * torch.randn(layout.size, dtype=torch.float64)
    images = torch.randn(m, 3, 2, 2, dtype=torch.float64)
    text = torch.randn(m, dt, dtype=torch.float64)
    lrs = torch.tensor([0.3, 0.2], dtype=torch.float64)
    batches = [torch.tensor([0, 2, 4, 5]), torch.tensor([1, 3, 0]), torch.tensor([5, 4, 1, 2])]
    return net, layout, start, target, images, text, lrs, batches


def _split(layout, flat):
    pieces = torch.split(flat, layout.numels)
    return [p.view(s) for p, s in zip(pieces, layout.shapes, strict=True)]


def test_mtt_gradient_equals_hand_unrolled_reference():
    net, layout, start, target, images, text, lrs, batches = _linear_problem()
    images.requires_grad_(True)
    text.requires_grad_(True)
    lrs.requires_grad_(True)
    got = tm.matching_loss(net, layout, start, target, images, text, lrs, batches)
    g_got = torch.autograd.grad(got, (images, text, lrs))
    want = _naive_matching(_split(layout, start), layout.n_image_tensors, _split(layout, target), images, text,
                           lrs, batches)
    g_want = torch.autograd.grad(want, (images, text, lrs))
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    for a, b in zip(g_got, g_want, strict=True):
        assert b.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_mtt_gradient_equals_finite_differences():
    net, layout, start, target, images, text, lrs, batches = _linear_problem(seed=1)
    images.requires_grad_(True)
    grad = torch.autograd.grad(tm.matching_loss(net, layout, start, target, images, text, lrs, batches), images)[0]
    eps = 1e-6
    for pos in [(0, 0, 0, 0), (2, 1, 1, 0), (5, 2, 0, 1)]:
        with torch.no_grad():
            plus, minus = images.clone(), images.clone()
            plus[pos] += eps
            minus[pos] -= eps
        fd = (tm.matching_loss(net, layout, start, target, plus, text, lrs, batches)
              - tm.matching_loss(net, layout, start, target, minus, text, lrs, batches)) / (2 * eps)
        assert grad[pos].item() == pytest.approx(fd.item(), rel=1e-5, abs=1e-9)


def test_lors_gradient_equals_hand_unrolled_reference():
    net, layout, start, target, images, text, lrs, batches = _linear_problem(seed=2)
    sim = tm.LowRankSimilarity(len(images), rank=2, alpha=3.0).double()
    with torch.no_grad():
        sim.right.normal_(std=0.1)  # off the identity, so every similarity parameter gets a gradient
    images.requires_grad_(True)
    lrs.requires_grad_(True)
    got = tm.matching_loss(net, layout, start, target, images, text, lrs, batches, similarity=sim)
    wrt = (images, lrs, sim.diag, sim.left, sim.right)
    g_got = torch.autograd.grad(got, wrt)
    want = _naive_matching(_split(layout, start), layout.n_image_tensors, _split(layout, target), images, text,
                           lrs, batches, sim=(sim.diag, sim.left, sim.right, 3.0 / 2))
    g_want = torch.autograd.grad(want, wrt)
    assert got.item() == pytest.approx(want.item(), rel=1e-10)
    for a, b in zip(g_got, g_want, strict=True):
        assert b.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)


def test_lowrank_similarity_starts_as_identity_and_wbce_weighs_both_sides():
    sim = tm.LowRankSimilarity(5, rank=2, alpha=3.0)
    torch.testing.assert_close(sim(), torch.eye(5))
    torch.testing.assert_close(sim(torch.tensor([3, 1])), torch.eye(2))
    logits = torch.tensor([[5.0, -5.0, -5.0], [-5.0, 5.0, -5.0], [-5.0, -5.0, 5.0]])
    good = contrastive.wbce_loss(logits, torch.eye(3))
    assert good.item() == pytest.approx(float(-torch.nn.functional.logsigmoid(torch.tensor(5.0))), rel=1e-6)
    assert contrastive.wbce_loss(-logits, torch.eye(3)) > 10 * good


# ----------------------------------------------------------------------------------------------------
# distillation


@pytest.mark.parametrize("method", tm.METHODS)
def test_matching_loss_decreases(tiny, method):
    base, train, experts = tiny
    settings = tm.MatchSettings(**{**vars(FAST), "iterations": 40, "lr_img": 30, "lr_txt": 30, "lr_sim": 0.1})
    res = tm.distill(method, experts, copy.deepcopy(base), 16, train, 8, settings, seed=0)
    assert res.loss.shape == (40,) and np.isfinite(res.loss).all()
    assert res.loss[-10:].mean() < 0.9 * res.loss[:10].mean()
    assert res.images.shape == (8, 3, 8, 8) and res.images.dtype == np.uint8
    assert res.text.shape == (8, 6) and res.lr_image > 0 and res.lr_text > 0
    assert (res.similarity is None) == (method == "tm")
    if method == "lors":
        assert res.similarity.shape == (8, 8) and not np.allclose(res.similarity, np.eye(8))


def test_distill_is_deterministic_from_the_seed(tiny):
    base, train, experts = tiny
    settings = tm.MatchSettings(**{**vars(FAST), "iterations": 5})
    a = tm.lors(experts, copy.deepcopy(base), 16, train, 6, settings, seed=3)
    torch.manual_seed(999)
    b = tm.lors(experts, copy.deepcopy(base), 16, train, 6, settings, seed=3)
    c = tm.lors(experts, copy.deepcopy(base), 16, train, 6, settings, seed=4)
    for field in ("pixels", "text", "similarity", "loss", "init_pairs"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert (a.lr_image, a.lr_text) == (b.lr_image, b.lr_text)
    assert not np.array_equal(a.init_pairs, c.init_pairs)


@pytest.mark.parametrize("method", tm.METHODS)
def test_snapshots_equal_shorter_runs(tiny, method):
    """One long run's snapshot after k iterations is the set a run of k iterations returns (the iteration curve
    needs no reruns); the last snapshot is the result."""
    base, train, experts = tiny
    settings = tm.MatchSettings(**{**vars(FAST), "iterations": 6, "lr_sim": 0.1})
    got = {}
    final = tm.distill(method, experts, copy.deepcopy(base), 16, train, 6, settings, seed=1, snapshots=[0, 2, 6],
                       on_snapshot=lambda d: got.setdefault(len(d.loss), d))
    assert sorted(got) == [0, 2, 6] and got[6] is final
    for k in (0, 2):
        short = tm.distill(method, experts, copy.deepcopy(base), 16, train, 6,
                           tm.MatchSettings(**{**vars(settings), "iterations": k}), seed=1)
        for field in ("pixels", "images", "text", "similarity", "loss", "init_pairs"):
            np.testing.assert_array_equal(getattr(got[k], field), getattr(short, field))
        assert (got[k].lr_image, got[k].lr_text, got[k].settings) == (short.lr_image, short.lr_text, short.settings)
    with pytest.raises(ValueError, match=r"snapshots \[7\] must lie in \[0, iterations=6\]"):
        tm.distill(method, experts, copy.deepcopy(base), 16, train, 6, settings, snapshots=[7], on_snapshot=print)


def test_zero_iterations_return_the_real_initial_pairs(tiny):
    base, train, experts = tiny
    res = tm.mtt_vl(experts, copy.deepcopy(base), 16, train, 5, FAST, seed=0)
    want = train.images[torch.from_numpy(train.image_index[res.init_pairs])].numpy()
    np.testing.assert_array_equal(res.images, want)
    np.testing.assert_array_equal(res.text, train.text[res.init_pairs])
    assert res.lr_image == pytest.approx(0.1) and len(res.loss) == 0


def test_bad_settings_fail_with_one_clear_error(tiny):
    base, train, experts = tiny
    run = lambda n=6, **kw: tm.distill("tm", experts, copy.deepcopy(base), 16, train, n,  # noqa: E731
                                       tm.MatchSettings(**{**vars(FAST), **kw}))
    with pytest.raises(ValueError, match="goes beyond the 3 epochs"):
        run(max_start_epoch=3, expert_epochs=2)
    run(max_start_epoch=2, expert_epochs=2)  # t <= 1, target <= 3: fine
    with pytest.raises(ValueError, match=r"n_pairs=49 must lie in \[1, 48\]"):
        run(n=49)
    with pytest.raises(ValueError, match="mini_batch"):
        run(n=3)
    wrong = copy.copy(experts)
    wrong.params = np.concatenate([experts.params, np.zeros((2, 4, 1), np.float32)], axis=2)
    with pytest.raises(ValueError, match="train the experts with this architecture"):
        tm.distill("tm", wrong, copy.deepcopy(base), 16, train, 6, FAST)
    with pytest.raises(ValueError, match="train the experts with this architecture"):  # another architecture
        tm.distill("tm", experts, _tiny_conv(width=8), 32, train, 6, FAST)
    with pytest.raises(ValueError, match="unknown method"):
        tm.distill("kip", experts, copy.deepcopy(base), 16, train, 6, FAST)
    bn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten())
    with pytest.raises(ValueError, match="BatchNorm"):
        tm.distill("tm", experts, bn, 16, train, 6, FAST)
    with pytest.raises(ValueError, match="BatchNorm"):
        tm.train_experts(lambda: ImageEncoder(bn, "bn", 16, 8, MEAN, STD, ""), train, 1, 1)


# ----------------------------------------------------------------------------------------------------
# command line


def test_cli_trains_experts_and_writes_a_distilled_set(tmp_path):
    from fakes import make_fake_dataset

    root = tmp_path / "toy"
    images, captions = make_fake_dataset(root, n_images=30)
    data.save_table(tmp_path / "emb" / "images.parquet", images)
    data.save_table(tmp_path / "emb" / "captions.parquet", captions)
    artifacts.write_manifest(tmp_path / "emb", "embed", ["images.parquet", "captions.parquet"])
    rng = np.random.default_rng(0)
    enc = type("E", (), {"name": "fake", "pooling": "mean", "normalize": True})()
    text_features.save_text_features(tmp_path / "tf", rng.normal(size=(len(captions), 6)).astype(np.float32), captions, enc)
    (tmp_path / "enc" / "convnet").mkdir(parents=True)
    (tmp_path / "enc" / "convnet" / "config.json").write_text(json.dumps(
        {"arch": {"width": 4, "depth": 2}, "image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}))
    common = ["--embeddings-dir", str(tmp_path / "emb"), "--text-features-dir", str(tmp_path / "tf"),
              "--dataset-root", str(root), "--encoders-dir", str(tmp_path / "enc"), "--seed", "0"]
    tm.main(["experts", *common, "--pretrained", "none", "--n-experts", "2", "--epochs", "2", "--batch-size", "8",
             "--out", str(tmp_path / "experts")])
    experts = tm.load_experts(tmp_path / "experts")
    assert experts.params.shape[:2] == (2, 3) and experts.encoder == "convnet"
    tm.main(["distill", *common, "--method", "lors", "--experts", str(tmp_path / "experts"), "--n-pairs", "6",
             "--iterations", "3", "--syn-steps", "2", "--mini-batch", "3", "--rank", "2", "--lr-sim", "0.1",
             "--out", str(tmp_path / "lors")])
    table = data.load_table(tmp_path / "lors" / "synthetic.parquet")
    assert list(table.columns) == ["file", "caption", "caption_id", "init_caption_id"] and len(table) == 6
    assert all((tmp_path / "lors" / f).is_file() for f in table.file)
    assert data.load_npy(tmp_path / "lors" / "text.npy").shape == (6, 6)
    assert data.load_npy(tmp_path / "lors" / "similarity.npy").shape == (6, 6)
    meta = data.load_json(tmp_path / "lors" / "meta.json")
    assert meta["method"] == "lors" and meta["settings"]["iterations"] == 3 and meta["lr_image"] > 0
    train_caps = set(captions.loc[captions.split == "train", "caption_id"])
    assert set(table.caption_id) <= train_caps and set(table.init_caption_id) <= train_caps
    # the set names the experts' and the text features' runs it was made from; experts retrained since are refused
    from pds import tm_evaluate

    expert_run = artifacts.open_artifact(tmp_path / "experts", "experts")
    features = artifacts.open_artifact(tmp_path / "tf", "text_features")
    assert artifacts.open_artifact(tmp_path / "lors", "tm").inputs == {"experts": expert_run.token,
                                                                       "text_features": features.token}
    assert expert_run.inputs == {"text_features": features.token}
    tm.main(["experts", *common[:-1], "1", "--pretrained", "none", "--n-experts", "2", "--epochs", "2",
             "--batch-size", "8", "--out", str(tmp_path / "experts")])
    again = artifacts.open_artifact(tmp_path / "experts", "experts")
    assert again.token != expert_run.token
    with pytest.raises(ValueError, match=rf"lors was made from experts run {expert_run.token}, but .*experts holds "
                                         rf"experts run {again.token}: rerun the tm stage \(python -m pds.tm distill"):
        tm_evaluate.load_set(tmp_path / "lors", 32, [again])


def test_the_stage_runs_the_experts_then_both_methods_with_params_yaml():
    """`python -m pds.tm stage` (the tm stage's command) passes params.yaml's tm: and base: as the flags the stage
    used to spell out."""
    from pds import config

    p = config.load()
    t, b = p["tm"], p["base"]
    experts, mtt, lors = tm.stage_commands(p)
    world = ["--dataset-root", f"data/raw/{b['dataset']}", "--encoders-dir", f"models/{b['dataset']}/toy-encoders",
             "--seed", str(b["seed"])]
    assert experts == ["experts", *world, "--encoder", t["encoder"], "--n-experts", str(t["n_experts"]),
                       "--epochs", str(t["epochs"]), "--lr-image", str(t["lr_image"]), "--lr-text",
                       str(t["lr_text"]), "--workers", "2", "--out", "data/tm/experts"]
    assert mtt[:3] == ["distill", "--method", "tm"] and lors[:3] == ["distill", "--method", "lors"]
    for command in (mtt, lors):
        flags = dict(zip(command[3::2], command[4::2], strict=True))
        assert flags["--n-pairs"] == str(b["n_pairs"]) and flags["--lr-img"] == str(t["lr_img"])
        assert flags["--iterations"] == str(t["iterations"]) and flags["--experts"] == "data/tm/experts"
    assert dict(zip(lors[3::2], lors[4::2], strict=True))["--lr-sim"] == str(t["lr_sim"])
    assert "--lr-sim" not in mtt and mtt[-1] == "data/tm/tm" and lors[-1] == "data/tm/lors"
