"""Smoke test: notebooks 02_cluster and 03_match run under papermill (the `dvc repro` injection path) on a
tiny fabricated dataset and write their artefacts."""

import re
import shutil

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


def _run(nb, tmp, **parameters):
    papermill.execute_notebook(str(ROOT / "notebooks" / nb), str(tmp / nb), kernel_name="python3", cwd=str(ROOT),
                               progress_bar=False, parameters=parameters)


@pytest.mark.parametrize("bad, message", [
    ({"rm_ratio": 1.0}, r"rm_ratio=1.0 must be in \[0, 1\)"),  # before the by-hand filter cell can index past the end
    ({"n_clusters": 0}, "n_clusters=0 must be a whole number >= 1.*set base.n_pairs"),
])
def test_cluster_notebook_checks_its_parameters_first(ran, tmp_path, bad, message):
    with pytest.raises(papermill.PapermillExecutionError) as e:
        _run("02_cluster.ipynb", tmp_path, embeddings_dir=str(ran / "embeddings"), out_dir=str(tmp_path / "c"), **bad)
    assert "check_params" in e.value.source and re.search(message, e.value.evalue)  # the imports cell: no work yet
    assert "lower" not in e.value.evalue and not (tmp_path / "c").exists()


def test_match_notebook_refuses_a_mixed_killed_or_stale_clusters_folder(ran, tmp_path):
    common = {"embeddings_dir": str(ran / "embeddings"), "dataset_root": str(ran / "raw" / "fake"),
              "out_dir": str(tmp_path / "prototypes")}
    # labels from another k-means run beside this run's other files
    mixed = tmp_path / "mixed"
    shutil.copytree(ran / "clusters", mixed)
    labels = data.load_npy(mixed / "image_labels.npy")
    data.save_npy(mixed / "image_labels.npy", (labels + 1) % 4)
    with pytest.raises(papermill.PapermillExecutionError) as e:
        _run("03_match.ipynb", tmp_path, clusters_dir=str(mixed), **common)
    assert re.search(r"mixed/image_labels.npy is not the file run \w+ of cluster wrote.*rerun the cluster stage "
                     r"\(notebook 02", e.value.evalue)
    # a run killed before its manifest
    killed = tmp_path / "killed"
    shutil.copytree(ran / "clusters", killed)
    (killed / "manifest.json").unlink()
    with pytest.raises(papermill.PapermillExecutionError) as e:
        _run("03_match.ipynb", tmp_path, clusters_dir=str(killed), **common)
    assert "killed has no manifest.json: its run did not finish" in e.value.evalue
    # clusters of these pairs, but made from another embed run than the one beside them
    other = tmp_path / "embeddings"
    images, captions = data.load_table(ran / "embeddings" / "images.parquet"), data.load_table(
        ran / "embeddings" / "captions.parquet")
    make_fake_embeddings(other, images, captions, d=16, n_groups=4, seed=1)
    with pytest.raises(papermill.PapermillExecutionError) as e:
        _run("03_match.ipynb", tmp_path, clusters_dir=str(ran / "clusters"), **(common | {"embeddings_dir": str(other)}))
    made = data.load_json(ran / "clusters" / "manifest.json")["inputs"]["embed"]
    now = data.load_json(other / "manifest.json")["token"]
    assert re.search(rf"clusters was made from embed run {made}, but .*embeddings holds embed run {now}: rerun the "
                     r"cluster stage \(notebook 02", e.value.evalue)
    assert not (tmp_path / "prototypes").exists()


def test_prototypes_record_the_runs_they_were_made_from(ran):
    manifest = data.load_json(ran / "prototypes" / "manifest.json")
    assert manifest["stage"] == "match" and set(manifest["files"]) == set(match.FILES)
    assert manifest["inputs"] == {"cluster": data.load_json(ran / "clusters" / "manifest.json")["token"],
                                  "embed": data.load_json(ran / "embeddings" / "manifest.json")["token"]}
