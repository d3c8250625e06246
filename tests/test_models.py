"""Model loading (pds.models, CLIP/unCLIP section): the committed toy models load through the same calls as
real checkpoints, and a tiny random unCLIP pipeline exercises the loader and its dimension check."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from unclip_fakes import tiny_unclip

from pds import models, paths
from pds.toy.captions import make_captions
from pds.toy.scene import draw_image

TOY_CLIP = "local-dir:models/toyworld/toy-clip"
TOY_UNCLIP = "models/toyworld/toy-unclip"


@pytest.fixture(scope="module")
def toy_scenes():
    """Three toy images that differ in colour, shape and background, with a caption each."""
    rng = np.random.default_rng(0)
    scenes = [dict(shape="circle", colour="red", size="large", count=1, arrangement="single", position="center",
                   background="white"),
              dict(shape="square", colour="blue", size="large", count=2, arrangement="row", position="top",
                   background="black"),
              dict(shape="triangle", colour="yellow", size="small", count=3, arrangement="column", position="left",
                   background="gray")]
    images = [draw_image(a, 32, np.random.default_rng(i)) for i, a in enumerate(scenes)]
    captions = [make_captions(a, rng, n=1)[0] for a in scenes]
    return images, captions


# ----------------------------------------------------------------------------------------------------
# committed toy models


def test_toy_clip_loads_and_matches_images_to_their_captions(toy_scenes):
    model, preprocess, tokenizer = models.load_clip(TOY_CLIP, "none", device="cpu")
    assert not model.training and models.clip_embed_dim(model) == 64
    images, captions = toy_scenes
    with torch.inference_mode():
        img = F.normalize(model.encode_image(torch.stack([preprocess(im) for im in images])), dim=-1)
        txt = F.normalize(model.encode_text(tokenizer(captions)), dim=-1)
    assert (img @ txt.T).argmax(1).tolist() == [0, 1, 2]


def test_toy_clip_preprocess_equals_the_training_normalisation(toy_scenes):
    from pds.toy import clip as toy_clip

    _, preprocess, _ = models.load_clip(TOY_CLIP, device="cpu")
    config = json.loads((paths.MODELS / "toyworld" / "toy-clip" / "open_clip_config.json").read_text())
    images, _ = toy_scenes
    pixels = torch.from_numpy(np.stack([np.asarray(im) for im in images]))
    np.testing.assert_allclose(toy_clip.normalize_images(pixels, config).numpy(),
                               torch.stack([preprocess(im) for im in images]).numpy(), atol=1e-6)


def test_toy_unclip_decodes_an_embedding_and_caption_on_cpu(toy_scenes):
    model, preprocess, _ = models.load_clip(TOY_CLIP, device="cpu")
    pipe = models.load_unclip(TOY_UNCLIP, device="cpu")
    models.check_unclip_dim(models.clip_embed_dim(model), pipe)
    assert pipe.unet.dtype == torch.float32
    images, captions = toy_scenes
    with torch.inference_mode():
        emb = model.encode_image(preprocess(images[0])[None])
    out = pipe(image_embeds=emb, prompt=captions[:1], num_inference_steps=3, guidance_scale=5.0,
               generator=[torch.Generator().manual_seed(0)]).images
    assert len(out) == 1 and out[0].size == (32, 32) and out[0].mode == "RGB"


# ----------------------------------------------------------------------------------------------------
# load_clip errors (no hub is ever touched)


def test_load_clip_rejects_unknown_names_and_tags(tmp_path):
    with pytest.raises(ValueError, match="unknown open_clip model"):
        models.load_clip("ViT-Nope-99", "openai")
    with pytest.raises(ValueError, match="unknown pretrained tag"):
        models.load_clip("ViT-L-14", "not-a-tag")
    with pytest.raises(FileNotFoundError, match="open_clip_config.json"):
        models.load_clip(f"local-dir:{tmp_path}")


# ----------------------------------------------------------------------------------------------------
# unCLIP loader on a tiny random pipeline


@pytest.fixture(scope="module")
def saved_tiny_unclip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-unclip")
    tiny_unclip(embed_dim=8).save_pretrained(folder)
    return folder


def test_load_unclip_reads_a_save_pretrained_folder(saved_tiny_unclip):
    pipe = models.load_unclip(str(saved_tiny_unclip), device="cpu")
    assert type(pipe).__name__ == "StableUnCLIPImg2ImgPipeline"
    assert models.unclip_embed_dim(pipe) == 8
    models.check_unclip_dim(8, pipe)
    out = pipe(image_embeds=torch.randn(2, 8), prompt=["a red circle", "two blue squares"], num_inference_steps=2,
               generator=[torch.Generator().manual_seed(i) for i in range(2)]).images
    assert [im.size for im in out] == [(16, 16), (16, 16)]


def test_check_unclip_dim_names_the_compatible_pairs(saved_tiny_unclip):
    pipe = models.load_unclip(str(saved_tiny_unclip), device="cpu")
    with pytest.raises(ValueError, match=r"768-d but the unCLIP decoder is conditioned on 8-d") as e:
        models.check_unclip_dim(768, pipe)
    assert "ViT-L-14/openai" in str(e.value) and "unclip-small (768-d)" in str(e.value)
    assert "ViT-H-14" in str(e.value) and "(1024-d)" in str(e.value)


def test_check_unclip_dim_catches_an_inconsistent_decoder():
    pipe = tiny_unclip(embed_dim=8)
    pipe.unet.register_to_config(projection_class_embeddings_input_dim=12)
    with pytest.raises(ValueError, match="inconsistent"):
        models.check_unclip_dim(8, pipe)


def test_load_unclip_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        models.load_unclip(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        models.load_unclip(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not found"):
        models.load_unclip("models/no-such-decoder")


def test_toy_model_names_the_worlds_own_models_and_leaves_real_names_alone():
    from pds import paths

    assert paths.toy_model("toy", "toyworld", "clip") == "local-dir:models/toyworld/toy-clip"
    assert paths.toy_model("toy", "toyflickr", "unclip") == "models/toyflickr/toy-unclip"
    assert paths.toy_model("toy", "toyflickr", "encoders") == "models/toyflickr/toy-encoders"
    assert paths.toy_model("ViT-L-14", "flickr30k", "clip") == "ViT-L-14"
    with pytest.raises(ValueError, match="unknown toy model kind 'vae'"):
        paths.toy_model("toy", "toyworld", "vae")
    with pytest.raises(ValueError, match="must be a world's name"):
        paths.toy_model("toy", "data/raw/toyworld", "clip")


def _truncate(path):
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 3])


def test_a_truncated_model_folder_is_named(tmp_path):
    import shutil

    clip = tmp_path / "toy-clip"
    shutil.copytree(paths.ROOT / "models/toyworld/toy-clip", clip)
    _truncate(clip / "open_clip_model.safetensors")
    with pytest.raises(ValueError, match=rf"model folder {clip} is unreadable or incomplete.*toymodels"):
        models.load_clip(f"local-dir:{clip}", device="cpu")
    unclip = tmp_path / "toy-unclip"
    shutil.copytree(paths.ROOT / "models/toyworld/toy-unclip", unclip)
    _truncate(unclip / "unet" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(ValueError, match=rf"model folder {unclip} is unreadable or incomplete.*toymodels"):
        models.load_unclip(str(unclip), device="cpu")
    encoders = tmp_path / "toy-encoders"
    shutil.copytree(paths.ROOT / "models/toyworld/toy-encoders", encoders)
    _truncate(encoders / "convnet" / "model.safetensors")
    with pytest.raises(ValueError, match=rf"model folder {encoders / 'convnet'} is unreadable.*pds.toy.encoders"):
        models.load_image_encoder("convnet", "toy", str(encoders))
    (encoders / "resnet" / "config.json").write_text('{"arch": {}}')
    with pytest.raises(ValueError, match=r"resnet/config.json lacks image_size, mean, std"):
        models.load_image_encoder("resnet", "toy", str(encoders))
    text = tmp_path / "text"
    shutil.copytree(models.minilm_path(), text)
    _truncate(text / "model.safetensors")
    with pytest.raises(ValueError, match=rf"model folder {text} is unreadable or incomplete"):
        models.load_text_encoder(str(text), device="cpu")
