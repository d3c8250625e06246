"""Smoke test: notebooks 02_cluster and 03_match run under papermill (the `dvc repro` injection path) on a
tiny fabricated dataset and write their artefacts."""

import numpy as np
import papermill
import pytest
from fakes import make_fake_dataset, make_fake_embeddings

from pds import cluster, data, match
from pds.paths import ROOT


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nb")
    images, captions = make_fake_dataset(tmp / "raw" / "fake", n_images=40, n_groups=4)
    make_fake_embeddings(tmp / "embeddings", images, captions, d=16, n_groups=4)
    common = {"embeddings_dir": str(tmp / "embeddings"), "dataset_root": str(tmp / "raw" / "fake")}
    papermill.execute_notebook(
        str(ROOT / "notebooks" / "02_cluster.ipynb"), str(tmp / "02_cluster.ipynb"), kernel_name="python3",
        cwd=str(ROOT), progress_bar=False,
        parameters=common | {"out_dir": str(tmp / "clusters"), "n_clusters": 4, "rm_ratio": 0.2,
                             "batch_size": 64, "n_init": 3, "seed": 0})
    papermill.execute_notebook(
        str(ROOT / "notebooks" / "03_match.ipynb"), str(tmp / "03_match.ipynb"), kernel_name="python3",
        cwd=str(ROOT), progress_bar=False,
        parameters=common | {"clusters_dir": str(tmp / "clusters"), "out_dir": str(tmp / "prototypes")})
    return tmp


def test_cluster_notebook_writes_its_artefacts(ran):
    for name in ("keep", "caption_ids", "image_labels", "text_labels", "image_centroids", "text_centroids"):
        assert (ran / "clusters" / f"{name}.npy").exists()
    summary = data.load_json(ran / "clusters" / "summary.json")
    assert summary["n_pairs"] == 120 and summary["n_kept"] == 96 and summary["n_clusters"] == 4


def test_match_notebook_recovers_the_four_groups(ran):
    protos = match.load_prototypes(ran / "prototypes")
    prompts = data.load_table(ran / "prototypes" / "prompts.parquet")
    assert len(protos) == 4 and protos.n_empty == 0 and np.isfinite(protos.image).all()
    assert data.load_npy(ran / "prototypes" / "overlap.npy").shape == (4, 4)
    # the fake groups are separated blobs: every intersection is a whole group (24 kept pairs)
    assert protos.overlap.sum() == 96
    captions = data.load_table(ran / "embeddings" / "captions.parquet")
    groups = {frozenset(captions.image_id[m].to_numpy() % 4) for m in protos.members}
    assert groups == {frozenset([g]) for g in range(4)}
    # each prompt caption describes an image of its prototype's group
    image_of = captions.set_index("caption_id").image_id
    assert sorted(image_of[prompts.caption_id].to_numpy() % 4) == [0, 1, 2, 3]
    assert cluster.load_clusters(ran / "clusters").n_clusters == 4
