import json

import numpy as np
import pandas as pd
import pytest

from pds import cluster, embed, shards


def tiny_embeddings(tmp_path, n_images=30, d=8, seed=0):
    rng = np.random.default_rng(seed)
    split = np.array(["train"] * 20 + ["val"] * 5 + ["test"] * 5)
    images = pd.DataFrame({"image_id": np.arange(n_images), "path": [f"img/{i}.png" for i in range(n_images)],
                           "split": split})
    image_id = np.repeat(np.arange(n_images), 5)
    captions = pd.DataFrame({"caption_id": np.arange(5 * n_images), "image_id": image_id, "split": split[image_id],
                             "caption": [f"caption {i}" for i in range(5 * n_images)]})
    emb = embed.Embeddings(rng.normal(size=(n_images, d)).astype(np.float32),
                           rng.normal(size=(5 * n_images, d)).astype(np.float32), images, captions)
    embed.save_embeddings(tmp_path / "emb", emb)
    return emb


def test_round_trip_and_manifest(tmp_path):
    emb = tiny_embeddings(tmp_path)
    manifest = shards.from_embeddings(tmp_path / "emb", tmp_path / "s", shard_size=33, dtype="float32")
    assert [s["rows"] for s in manifest["shards"]] == [33, 33, 33, 1]  # 100 train captions
    assert (tmp_path / "s" / "img_emb" / "img_emb_3.npy").exists()
    assert (tmp_path / "s" / "metadata" / "metadata_0.parquet").exists()
    s = shards.open_shards(tmp_path / "s", verify=True)
    image_pairs, text_pairs, meta = shards.read_pairs(s)
    ref_img, ref_txt, ref_ids, ref_image_ids = cluster.train_pairs(emb.image, emb.text, emb.captions)
    np.testing.assert_array_equal(image_pairs, ref_img)
    np.testing.assert_array_equal(text_pairs, ref_txt)
    np.testing.assert_array_equal(meta["caption_id"], ref_ids)
    np.testing.assert_array_equal(meta["image_id"], ref_image_ids)
    assert meta["path"][0] == emb.images.path[ref_image_ids[0]]
    # back to one row per image: the train images' rows and the train captions' rows
    image, text, captions = shards.to_embeddings(s)
    np.testing.assert_array_equal(image, emb.image[:20])
    np.testing.assert_array_equal(text, emb.text[:100])
    assert captions["caption"].tolist() == emb.captions.caption[:100].tolist()
    # a manifest rebuilt from the files (shards written elsewhere) lists the same shards and hashes
    (tmp_path / "s" / "manifest.json").unlink()
    assert shards.make_manifest(tmp_path / "s")["shards"] == manifest["shards"]


def test_command_line(tmp_path, capsys):
    tiny_embeddings(tmp_path)
    shards.main(["from-embeddings", str(tmp_path / "emb"), str(tmp_path / "s"), "--shard-size", "60"])
    assert "2 shards, 100 pairs, 8-d float16" in capsys.readouterr().out
    (tmp_path / "s" / "manifest.json").unlink()
    shards.main(["manifest", str(tmp_path / "s")])
    assert shards.open_shards(tmp_path / "s", verify=True).n_shards == 2


def test_float16_normalised(tmp_path):
    tiny_embeddings(tmp_path)
    shards.from_embeddings(tmp_path / "emb", tmp_path / "s", shard_size=50, normalize=True)
    s = shards.open_shards(tmp_path / "s")
    img, txt, _ = s.read(0)
    assert img.dtype == np.float16 and s.manifest["normalized"] is True
    np.testing.assert_allclose(np.linalg.norm(np.asarray(img, np.float32), axis=1), 1, atol=2e-3)


@pytest.fixture
def written(tmp_path):
    tiny_embeddings(tmp_path)
    shards.from_embeddings(tmp_path / "emb", tmp_path / "s", shard_size=40, dtype="float32")
    return tmp_path / "s"


def test_rows_disagree(written):
    meta = pd.read_parquet(written / "metadata" / "metadata_1.parquet")
    meta.iloc[:-1].to_parquet(written / "metadata" / "metadata_1.parquet")
    with pytest.raises(ValueError, match=r"^shard 1 disagrees on its rows: img_emb_1.npy 40, text_emb_1.npy 40, "
                                         r"metadata_1.parquet 39") as e:
        shards.open_shards(written)
    assert "\n" not in str(e.value)


def test_metadata_without_ids(written):
    meta = pd.read_parquet(written / "metadata" / "metadata_0.parquet")
    meta.drop(columns="image_id").to_parquet(written / "metadata" / "metadata_0.parquet")
    with pytest.raises(ValueError, match=r"metadata_0.parquet lacks the integer columns \['image_id'\]"):
        shards.open_shards(written)


def test_missing_shard(written):
    (written / "text_emb" / "text_emb_2.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"text_emb_2.npy is missing"):
        shards.open_shards(written)
    (written / "manifest.json").unlink()
    (written / "img_emb" / "img_emb_1.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"shard 1 is missing"):
        shards.make_manifest(written)


def test_truncated_shard(written):
    path = written / "img_emb" / "img_emb_0.npy"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"img_emb_0.npy is truncated"):
        shards.open_shards(written)


@pytest.mark.parametrize("bad, message", [(np.zeros((40, 8), np.float64), "is float64, expected float32"),
                                          (np.zeros((40, 7), np.float32), r"has shape \(40, 7\), expected \(rows, 8\)"),
                                          (np.zeros((39, 8), np.float32), "shard 2 disagrees on its rows")])
def test_wrong_dtype_dimension_rows(written, bad, message):
    np.save(written / "text_emb" / "text_emb_2.npy", bad)
    with pytest.raises(ValueError, match=message):
        shards.open_shards(written)


def test_changed_shard_fails_verification_and_manifest_row_count(written):
    np.save(written / "img_emb" / "img_emb_0.npy", np.ones((40, 8), np.float32))
    shards.open_shards(written)  # shapes still fine
    with pytest.raises(ValueError, match=r"img_emb_0.npy does not match its sha256"):
        shards.open_shards(written, verify=True)
    manifest = json.loads((written / "manifest.json").read_text())
    manifest["shards"][1]["rows"] = 41
    (written / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"shard 1 .* has 40 rows but manifest.json says 41"):
        shards.open_shards(written)
