"""Toy model training code (pds.toy.clip / unclip / train / quality) on a tiny generated toy world:
tokenizer parity, the embedding-noising rule, recall against a brute-force loop, seeded reproducibility,
and the saved folders loading through pds.models."""

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
from unclip_fakes import tiny_unclip

from pds import models
from pds.toy import quality, train, unclip, world
from pds.toy.captions import parse_caption
from pds.toy.scene import ALL_COLOURS, ALL_SHAPES, COLOURS, SHAPES


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world") / "toyworld"  # load_dataset reads dataset_<folder name>.json
    world.generate_toyworld(root, n_train=24, n_val=4, n_test=6, seed=3)
    return root


def test_decoder_tokenizer_gives_open_clip_ids():
    captions = ["a gray backdrop with one orange plus sign toward the bottom left",
                "three stripy crosses, all of them violet", "Rhombus!  big   disks"]
    ours = unclip.tokenize(unclip.build_tokenizer(32), captions)
    theirs = open_clip.SimpleTokenizer(context_length=32)(captions)
    for a, b in zip(ours, theirs, strict=True):
        n = int((b != 0).sum())  # open_clip pads with 0, the decoder tokenizer with end-of-text
        assert a[:n].tolist() == b[:n].tolist() and (a[n:] == 49407).all()


def test_noise_image_embeddings_equals_the_pipeline_rule():
    pipe = tiny_unclip(embed_dim=8)
    with torch.no_grad():
        pipe.image_normalizer.mean.copy_(torch.randn(1, 8))
        pipe.image_normalizer.std.copy_(torch.rand(1, 8) + 0.5)
    emb, noise = torch.randn(3, 8), torch.randn(3, 8)
    for level in (0, 10, 250):
        want = pipe.noise_image_embeddings(emb, level, noise=noise)
        got = unclip.noise_image_embeddings(emb, torch.full((3,), level), pipe.image_normalizer,
                                            pipe.image_noising_scheduler, noise)
        torch.testing.assert_close(got, want)


def test_retrieval_recall_equals_a_brute_force_loop():
    rng = np.random.default_rng(0)
    img, txt = rng.normal(size=(7, 4)), rng.normal(size=(21, 4))
    text_image = np.repeat(np.arange(7), 3)
    got = quality.retrieval_recall(img, txt, text_image)
    ni = img / np.linalg.norm(img, axis=1, keepdims=True)
    nt = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    sim = ni @ nt.T
    for k in (1, 5, 10):
        tr = np.mean([len(set(np.argsort(-sim[i])[:k]) & set(np.flatnonzero(text_image == i))) > 0
                      for i in range(7)])
        ir = np.mean([text_image[j] in np.argsort(-sim[:, j])[:k] for j in range(21)])
        assert got[f"TR@{k}"] == pytest.approx(100 * tr, abs=0.01)
        assert got[f"IR@{k}"] == pytest.approx(100 * ir, abs=0.01)


def test_train_clip_is_seeded_and_loads_as_local_dir(tiny_world, tmp_path):
    kw = dict(seed=0, steps=3, batch_size=8, vision_width=32, vision_layers=1, text_width=32, text_layers=1,
              context_length=24, embed_dim=16)
    train.train_clip(tiny_world, tmp_path / "a", **kw)
    train.train_clip(tiny_world, tmp_path / "b", **kw)
    weights = "open_clip_model.safetensors"
    assert (tmp_path / "a" / weights).read_bytes() == (tmp_path / "b" / weights).read_bytes()
    model, preprocess, tokenizer = models.load_clip(f"local-dir:{tmp_path / 'a'}", device="cpu")
    assert models.clip_embed_dim(model) == 16 and preprocess.transforms[0].size == 32
    assert tokenizer(["a red circle"]).shape == (1, 24)


def test_train_unclip_saves_a_pipeline_conditioned_on_the_clip(tiny_world, tmp_path):
    train.train_clip(tiny_world, tmp_path / "toy-clip", steps=2, batch_size=8, vision_width=32, vision_layers=1,
                     text_width=32, text_layers=1, embed_dim=16)
    log = train.train_unclip(tiny_world, tmp_path / "toy-clip", tmp_path / "toy-unclip", vae_steps=2,
                             vae_batch_size=8, unet_steps=2, unet_batch_size=8, text_hidden=32, text_layers=1)
    assert log["latent_scaling_factor"] > 0
    pipe = models.load_unclip(str(tmp_path / "toy-unclip"), device="cpu")
    models.check_unclip_dim(16, pipe)
    assert pipe.vae.config.scaling_factor == pytest.approx(log["latent_scaling_factor"], rel=1e-4)
    assert not torch.allclose(pipe.image_normalizer.std, torch.ones(1, 16))  # fitted to the embeddings
    out = pipe(image_embeds=torch.randn(1, 16), prompt="a red circle", num_inference_steps=2).images
    assert out[0].size == (32, 32)


def test_judge_prompts_cover_every_shape_and_colour():
    classes, prompts = quality.class_prompts()
    assert len(classes) == len(SHAPES) * len(COLOURS)
    for (shape, colour), ps in zip(classes, prompts, strict=True):
        for p in ps:
            parsed = parse_caption(p)
            assert parsed["shape"] == shape and parsed["colour"] == colour


def test_match_counts_layout_only_when_count_arrangement_and_position_all_agree():
    truth = pd.DataFrame({"shape": ["circle", "square", "cross"], "colour": ["red", "red", "blue"],
                          "count": [1, 2, 3], "arrangement": ["single", "row", "column"],
                          "position": ["top", "center", "left"]})
    pred = truth.copy()
    pred.loc[0, "shape"] = "square"  # shape wrong, layout right
    pred.loc[1, "position"] = "top"  # shape right, layout wrong
    got = quality._match(pred, truth)
    assert got["shape_colour"] == pytest.approx(200 / 3, abs=0.01) and got["layout"] == pytest.approx(200 / 3, abs=0.01)
    assert got["count"] == 100.0 and got["position"] == pytest.approx(200 / 3, abs=0.01)
    assert "layout" not in quality._match(pred[["shape", "colour"]], truth)  # zero-shot CLIP names no layout
    with pytest.raises(ValueError, match="2 predictions for 3 images"):
        quality._match(pred.iloc[:2], truth)


def test_judge_learns_every_attribute_of_the_tiny_world_and_refuses_incomplete_labels(tiny_world):
    pil, images, prompts, labels = quality.split_arrays(tiny_world, "train")
    assert list(labels.columns) == list(quality.JUDGED) and len(labels) == len(pil) == len(prompts) == 24
    for caption, (_, row) in zip(prompts, labels.iterrows(), strict=True):  # the attributes are the image's own
        assert parse_caption(caption).items() <= row.to_dict().items()
    judge = quality.train_judge(images, labels, steps=150, batch_size=24, progress=False)
    pred = judge.predict(images)
    assert list(pred.columns) == list(quality.JUDGED) and len(pred) == 24
    assert quality._match(pred, labels)["shape_colour"] > 80  # memorises 24 images; chance is 1 / 30
    with pytest.raises(ValueError, match="missing \\['background'\\]"):
        quality.train_judge(images, labels.drop(columns="background"), steps=1, progress=False)


def test_degrade_is_seeded_mild_and_in_range():
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    a = quality.degrade(x, torch.Generator().manual_seed(1))
    b = quality.degrade(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape and a.min() >= -1 and a.max() <= 1
    assert 0 < (a - x).abs().mean() < 0.5  # changed, but still the same picture


def test_epoch_batches_cover_every_row_once_per_epoch_and_are_seeded():
    from pds.toy.clip import epoch_batches

    batches = epoch_batches(10, 3, torch.Generator().manual_seed(0))
    first = [next(batches) for _ in range(6)]  # two epochs of three full batches (one row left out each)
    for epoch in (first[:3], first[3:]):
        rows = torch.cat(epoch).tolist()
        assert len(rows) == len(set(rows)) == 9 and set(rows) <= set(range(10))
    again = epoch_batches(10, 3, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, next(again)) for a in first)
    with pytest.raises(ValueError, match="exceeds the 2 training rows"):
        next(epoch_batches(2, 3, torch.Generator()))


def test_vae_weighting_puts_object_pixels_first():
    # one saturated pixel on grey: with fg_weight its error dominates the loss the VAE is trained on
    from pds.toy.unclip import train_vae

    torch.manual_seed(0)
    image = torch.full((4, 8, 8, 3), 128, dtype=torch.uint8)
    image[:, 3, 3] = torch.tensor([220, 40, 40], dtype=torch.uint8)

    def first_loss(fg_weight):
        torch.manual_seed(0)
        vae = unclip.build_components(8, image_size=8, vae_channels=(16, 32))["vae"]
        return train_vae(vae, image, steps=1, batch_size=4, lr=0.0, fg_weight=fg_weight, progress=False)[0]

    assert first_loss(0.0) != pytest.approx(first_loss(20.0), rel=1e-3)


def test_min_snr_weighting_is_the_plain_loss_when_gamma_never_binds_or_the_floor_is_one():
    from diffusers import DDIMScheduler

    latents = torch.randn(6, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    embeds = torch.randn(6, 8, generator=torch.Generator().manual_seed(2))

    def losses(snr_gamma, prediction_type, snr_floor=0.0):
        torch.manual_seed(0)
        comps = unclip.build_components(8, image_size=16, text_hidden=32, text_layers=1, max_length=8)
        comps["scheduler"] = DDIMScheduler.from_config(comps["scheduler"].config, prediction_type=prediction_type)
        unclip.fit_normalizer(comps["image_normalizer"], embeds)
        tokens = unclip.tokenize(comps["tokenizer"], ["a red circle"] * 6)
        return unclip.train_decoder(comps, latents, latents.abs() * 0.1, embeds, tokens, np.arange(6), steps=2,
                                    batch_size=3, seed=0, progress=False, snr_gamma=snr_gamma,
                                    snr_floor=snr_floor)

    # epsilon-prediction: weight min(SNR, gamma) / SNR is 1 for a gamma above every SNR
    assert losses(1e12, "epsilon") == pytest.approx(losses(None, "epsilon"), rel=1e-5)
    assert losses(1.0, "epsilon")[0] < losses(None, "epsilon")[0]  # the weight is <= 1, < 1 at low noise
    # v-prediction: min(SNR, gamma) / (SNR + 1) < 1 at every step
    assert losses(5.0, "v_prediction")[0] < losses(None, "v_prediction")[0]
    # a floor of 1 lifts every weight to 1 (the plain loss); a floor of 0.5 lifts only the smaller ones
    assert losses(5.0, "v_prediction", snr_floor=1.0) == pytest.approx(losses(None, "v_prediction"), rel=1e-5)
    assert losses(5.0, "v_prediction")[0] < losses(5.0, "v_prediction", snr_floor=0.5)[0] \
        < losses(None, "v_prediction")[0]
    with pytest.raises(ValueError, match="set snr_gamma"):  # a floor without Min-SNR would be ignored
        losses(None, "v_prediction", snr_floor=0.25)


def test_decoder_callback_runs_in_eval_mode_and_does_not_change_training():
    comps_a, comps_b = (unclip.build_components(8, image_size=16, text_hidden=32, text_layers=1, max_length=8)
                        for _ in range(2))
    comps_b["unet"].load_state_dict(comps_a["unet"].state_dict())
    comps_b["text_encoder"].load_state_dict(comps_a["text_encoder"].state_dict())
    latents = torch.randn(6, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    embeds = torch.randn(6, 8, generator=torch.Generator().manual_seed(2))
    for comps in (comps_a, comps_b):
        unclip.fit_normalizer(comps["image_normalizer"], embeds)
    tokens = unclip.tokenize(comps_a["tokenizer"], ["a red circle"] * 6)
    seen = []

    def callback(step):
        assert not comps_b["unet"].training
        seen.append((step, [p.detach().clone() for p in comps_b["unet"].parameters()]))

    kw = dict(steps=5, batch_size=3, seed=0, progress=False)
    la = unclip.train_decoder(comps_a, latents, latents.abs() * 0.1, embeds, tokens, np.arange(6), **kw)
    lb = unclip.train_decoder(comps_b, latents, latents.abs() * 0.1, embeds, tokens, np.arange(6), **kw,
                              callback=callback, callback_every=2)
    assert la == lb and [s for s, _ in seen] == [2, 4]
    for p, q in zip(comps_a["unet"].parameters(), comps_b["unet"].parameters(), strict=True):
        assert torch.equal(p, q)
    assert any(not torch.equal(a, b) for a, b in zip(seen[0][1], seen[1][1], strict=True))


def test_unclip_seed_seeds_the_decoder_only(monkeypatch, tmp_path):
    calls = {}
    monkeypatch.setattr(train, "train_clip", lambda *a, **kw: calls.setdefault("clip", kw) and {})
    monkeypatch.setattr(train, "train_unclip", lambda *a, **kw: calls.setdefault("unclip", kw) and {})
    train.main(["--out", str(tmp_path), "--seed", "3", "--unclip-seed", "7"])
    assert calls["clip"]["seed"] == 3 and calls["unclip"]["seed"] == 7
    calls.clear()
    train.main(["--out", str(tmp_path), "--seed", "3"])  # default: the decoder follows --seed
    assert calls["clip"]["seed"] == 3 and calls["unclip"]["seed"] == 3


def test_the_judge_and_the_zero_shot_classes_take_the_worlds_vocabulary():
    assert world.Knobs().labels(quality.JUDGED) == quality.JUDGED  # today's world: today's judge, exactly
    big = world.Knobs(n_shapes=9, n_colours=8)
    judged = big.labels(quality.JUDGED)
    assert judged["shape"] == ALL_SHAPES[:9] and judged["colour"] == ALL_COLOURS[:8]
    assert list(judged) == list(quality.JUDGED)
    classes, prompts = quality.class_prompts(big.shapes, big.colours)
    assert len(classes) == 72
    for (shape, colour), ps in zip(classes, prompts, strict=True):
        for p in ps:
            parsed = parse_caption(p)
            assert parsed["shape"] == shape and parsed["colour"] == colour, p
    judge = quality.AttributeJudge(judged)
    assert judge.heads["shape"].out_features == 9 and judge.heads["colour"].out_features == 8
