"""Toy model training code (pds.toy.clip / unclip / train / quality) on a tiny generated toy world:
tokenizer parity, the embedding-noising rule, recall against a brute-force loop, seeded reproducibility,
and the saved folders loading through pds.models."""

import numpy as np
import open_clip
import pytest
import torch
from unclip_fakes import tiny_unclip

from pds import models
from pds.toy import quality, train, unclip, world


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
    assert len(classes) == len(world.SHAPES) * len(world.COLOURS)
    for (shape, colour), ps in zip(classes, prompts, strict=True):
        for p in ps:
            parsed = world.parse_caption(p)
            assert parsed["shape"] == shape and parsed["colour"] == colour
