"""Smoke test: notebook 04_synthesize runs under papermill (the `dvc repro` injection path) with the
committed toy models on a tiny generated toy world, and writes one PNG per prototype plus the table."""

import pandas as pd
import papermill
import pytest

from pds import artifacts, data, embed, models
from pds.paths import ROOT
from pds.toy import world


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nb04")
    root = tmp / "raw" / "toyworld"
    world.generate_toyworld(root, n_train=12, n_val=2, n_test=2, seed=5)
    images, captions = data.load_dataset(root)
    clip, preprocess, tokenizer = models.load_clip("local-dir:models/toyworld/toy-clip", device="cpu")
    emb = embed.embed_dataset(clip, preprocess, tokenizer, images, captions, root)
    embed.save_embeddings(tmp / "embeddings", emb)
    # three "prototypes": the embeddings of three training images, prompted by one of their captions
    data.save_npy(tmp / "prototypes" / "image.npy", emb.image[:3])
    first = captions.groupby("image_id").caption.first()
    data.save_table(tmp / "prototypes" / "prompts.parquet",
                    pd.DataFrame({"prototype": [0, 1, 2], "caption": first[:3].tolist()}))
    data.save_table(tmp / "prototypes" / "members.parquet", pd.DataFrame({"prototype": [0, 1, 2], "caption_id": [0, 5, 10]}))
    artifacts.write_manifest(tmp / "prototypes", "match", ["image.npy", "prompts.parquet", "members.parquet"])
    papermill.execute_notebook(
        str(ROOT / "notebooks" / "04_synthesize.ipynb"), str(tmp / "04_synthesize.ipynb"), kernel_name="python3",
        cwd=str(ROOT), progress_bar=False,
        parameters={"prototypes_dir": str(tmp / "prototypes"), "embeddings_dir": str(tmp / "embeddings"),
                    "dataset_root": str(root), "out_dir": str(tmp / "synthetic"), "num_inference_steps": 2,
                    "seed": 0})
    return tmp


def test_synthesize_notebook_writes_one_image_per_prototype(ran):
    table = data.load_table(ran / "synthetic" / "synthetic.parquet")
    assert table.file.tolist() == ["0000.png", "0001.png", "0002.png"]
    assert table.prototype.tolist() == [0, 1, 2]
    assert all(data.load_image(ran / "synthetic", f).size == (32, 32) for f in table.file)
    assert sorted(data.load_json(ran / "synthetic" / "manifest.json")["images"]) == table.file.tolist()
