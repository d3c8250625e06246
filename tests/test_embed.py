"""Stage 01: CLIP embeddings of every image and caption (tiny random CLIP, tiny fabricated dataset)."""

import json

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from pds import data, embed


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    model = open_clip.model.CLIP(
        embed_dim=16,
        vision_cfg=dict(image_size=16, patch_size=8, width=32, layers=1, head_width=16),
        text_cfg=dict(context_length=12, vocab_size=49408, width=32, heads=2, layers=1),
    ).eval()
    preprocess = open_clip.image_transform(16, is_train=False)
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=12)
    return model, preprocess, tokenizer


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    entries = []
    for i in range(7):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        split = "train" if i < 5 else ("val" if i == 5 else "test")
        entries.append({"filename": f"{i}.png", "split": split,
                        "sentences": [{"raw": f"picture number {i} variant {k}"} for k in range(2)]})
    (tmp_path / f"dataset_{tmp_path.name}.json").write_text(json.dumps({"images": entries}))
    return tmp_path


def test_embeds_every_image_and_caption_in_row_order(tiny_clip, dataset):
    model, preprocess, tokenizer = tiny_clip
    images, captions = data.load_dataset(dataset)
    emb = embed.embed_dataset(model, preprocess, tokenizer, images, captions, dataset, batch_size=3)
    assert emb.image.shape == (7, 16) and emb.text.shape == (14, 16)
    assert emb.image.dtype == np.float32 and emb.text.dtype == np.float32
    # row i is image i, whatever the batching
    one = embed.embed_pil_images(model, preprocess, [data.load_image(dataset, images.path[4])])
    np.testing.assert_allclose(emb.image[4], one[0], atol=1e-5)
    with torch.inference_mode():
        t = model.encode_text(tokenizer([captions.caption[9]])).numpy()
    np.testing.assert_allclose(emb.text[9], t[0], atol=1e-5)
    # unnormalised, as the reference stores them
    assert not np.allclose(np.linalg.norm(emb.image, axis=1), 1.0)


def test_pairs_repeat_the_image_per_caption(tiny_clip, dataset):
    model, preprocess, tokenizer = tiny_clip
    images, captions = data.load_dataset(dataset)
    emb = embed.embed_dataset(model, preprocess, tokenizer, images, captions, dataset)
    img, txt, ids = emb.pairs("train")
    assert img.shape == (10, 16) and ids.tolist() == list(range(10))
    np.testing.assert_array_equal(img[0], img[1])  # two captions of image 0
    np.testing.assert_array_equal(txt, emb.text[:10])


def test_save_load_roundtrip_is_deterministic(tiny_clip, dataset, tmp_path_factory):
    model, preprocess, tokenizer = tiny_clip
    images, captions = data.load_dataset(dataset)
    outs = []
    for _ in range(2):
        out = tmp_path_factory.mktemp("emb")
        embed.save_embeddings(out, embed.embed_dataset(model, preprocess, tokenizer, images, captions, dataset))
        outs.append(out)
    for name in ["image.npy", "text.npy", "images.parquet", "captions.parquet"]:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes()
    emb = embed.load_embeddings(outs[0])
    assert len(emb.images) == 7 and emb.captions.caption[0] == "picture number 0 variant 0"


def test_missing_image_is_named(tiny_clip, dataset):
    model, preprocess, tokenizer = tiny_clip
    images, captions = data.load_dataset(dataset)
    (dataset / "3.png").unlink()
    with pytest.raises(FileNotFoundError, match="3.png"):
        embed.embed_dataset(model, preprocess, tokenizer, images, captions, dataset)



def test_embed_parameters_are_checked_first():
    embed.check_params("blip", 0)
    with pytest.raises(ValueError, match="unknown annotation format 'coco'"):
        embed.check_params("coco", 30)
    with pytest.raises(ValueError, match=r"max_words=-1 must be a whole number >= 0"):
        embed.check_params("karpathy", -1)
