"""Run-consistent stage folders (pds.artifacts): a manifest written last, checked by every reader."""

import numpy as np
import pytest

from pds import artifacts, cluster, data
from pds.paths import ROOT


def _folder(tmp_path, name="clusters", value=1):
    out = tmp_path / name
    data.save_npy(out / "a.npy", np.full(3, value))
    data.save_json(out / "b.json", {"v": value})
    return out


def test_manifest_roundtrip_and_the_token_is_deterministic(tmp_path):
    one = artifacts.write_manifest(_folder(tmp_path, "one"), "cluster", ["a.npy", "b.json"])
    two = artifacts.write_manifest(_folder(tmp_path, "two"), "cluster", ["b.json", "a.npy"])
    # same files, same inputs: the same token and byte-identical manifests (DVC reruns must not differ)
    assert one.token == two.token and len(one.token) == artifacts.TOKEN_CHARS
    assert (tmp_path / "one" / "manifest.json").read_bytes() == (tmp_path / "two" / "manifest.json").read_bytes()
    opened = artifacts.open_artifact(tmp_path / "one", "cluster")
    assert opened.token == one.token and opened.files["a.npy"]["size"] == (tmp_path / "one" / "a.npy").stat().st_size
    other = artifacts.write_manifest(_folder(tmp_path, "three", value=2), "cluster", ["a.npy", "b.json"])
    assert other.token != one.token
    made = artifacts.write_manifest(_folder(tmp_path, "four"), "match", ["a.npy"], [one])
    assert made.inputs == {"cluster": one.token}


def test_a_folder_without_its_manifest_is_never_complete(tmp_path):
    out = _folder(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"clusters has no manifest.json: its run did not finish.*notebook 02"):
        artifacts.open_artifact(out, "cluster")
    artifacts.write_manifest(out, "cluster", ["a.npy", "b.json"])
    artifacts.begin(out)  # a new run starts, and is killed before it writes its manifest
    data.save_npy(out / "a.npy", np.zeros(3))
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        artifacts.open_artifact(out, "cluster")
    with pytest.raises(FileNotFoundError, match=r"nowhere does not exist: make it first with notebook 03 run with "
                       r"out_dir = \".*nowhere\""):
        artifacts.open_artifact(tmp_path / "nowhere", "match")


@pytest.mark.parametrize("stage, folder, command", [
    ("embed", "data/embeddings", "`dvc repro embed`"),
    ("text_features", "data/text_features", "`dvc repro text_features`"),
    ("text_features", "build/try/features", "`python -m pds.text_features --embeddings-dir <its embeddings_dir> "
                                            "--out build/try/features`"),
    ("cluster", "build/try/clusters", 'notebook 02 run with out_dir = "build/try/clusters"'),
    ("match", "build/lesson/prototypes", "`make lesson` (the classroom world)"),
    ("toyworld", "data/raw/toyworld", "`dvc repro toyworld@toyworld`"),
    ("toyworld", "build/try/world", "`python -m pds.toy.world --out build/try/world`"),
])
def test_a_missing_folder_names_the_one_command_that_makes_it(stage, folder, command, monkeypatch):
    monkeypatch.delenv("PDS_LESSON", raising=False)
    assert artifacts.make_command(stage, ROOT / folder) == command


def test_a_folder_of_the_classroom_switch_is_made_by_make_lesson(tmp_path, monkeypatch):
    monkeypatch.setenv("PDS_LESSON", str(tmp_path / "lesson"))
    with pytest.raises(FileNotFoundError, match=r"embeddings does not exist: make it first with `make lesson`"):
        artifacts.open_artifact(tmp_path / "lesson" / "embeddings", "embed")


def test_a_file_of_another_run_is_named(tmp_path):
    out = _folder(tmp_path)
    run = artifacts.write_manifest(out, "cluster", ["a.npy", "b.json"])
    data.save_npy(out / "a.npy", np.full(3, 7))  # same size, other bytes: left by another run
    with pytest.raises(ValueError, match=rf"a.npy is not the file run {run.token} of cluster wrote.*rerun the "
                                         r"cluster stage \(notebook 02"):
        artifacts.open_artifact(out, "cluster")
    artifacts.open_artifact(out, "cluster", names=["b.json"])  # only the files a reader loads are checked
    (out / "b.json").unlink()
    with pytest.raises(FileNotFoundError, match="b.json is listed in .*manifest.json but missing"):
        artifacts.open_artifact(out, "cluster", names=["b.json"])


def test_a_folder_of_another_stage_or_unfinished_is_refused(tmp_path):
    out = _folder(tmp_path)
    artifacts.write_manifest(out, "cluster", ["a.npy"])
    with pytest.raises(ValueError, match="holds the output of 'cluster', not of 'match'"):
        artifacts.open_artifact(out, "match")
    data.save_json(out / "manifest.json", {"images": {"0000.png": "key"}})  # synthesize, stopped midway
    with pytest.raises(ValueError, match=r"is incomplete.*rerun the synthesize stage.*resumes"):
        artifacts.open_artifact(out, "synthesize")
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="manifest.json is not valid JSON"):
        artifacts.open_artifact(out, "cluster")


def test_made_from_another_run_names_both_folders_and_the_stage_to_rerun(tmp_path):
    emb_a = artifacts.write_manifest(_folder(tmp_path, "embeddings"), "embed", ["a.npy"])
    clusters = artifacts.write_manifest(_folder(tmp_path, "clusters"), "cluster", ["a.npy"], [emb_a])
    artifacts.open_artifact(tmp_path / "clusters", "cluster", [emb_a])
    emb_b = artifacts.write_manifest(_folder(tmp_path, "embeddings", value=5), "embed", ["a.npy"])
    with pytest.raises(ValueError) as e:
        artifacts.open_artifact(tmp_path / "clusters", "cluster", [emb_b])
    assert str(e.value) == (f"{tmp_path / 'clusters'} was made from embed run {emb_a.token}, but "
                            f"{tmp_path / 'embeddings'} holds embed run {emb_b.token}: rerun the cluster stage "
                            "(notebook 02, dvc repro cluster).")
    proto = artifacts.write_manifest(_folder(tmp_path, "prototypes"), "match", ["a.npy"])  # made from nothing
    with pytest.raises(ValueError, match="prototypes was made from no cluster output"):
        artifacts.check_made_from(artifacts.open_artifact(tmp_path / "prototypes", "match"), clusters)
    assert proto.inputs == {}


def test_load_clusters_refuses_clusters_of_other_embeddings(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    emb = artifacts.write_manifest(_folder(tmp_path, "embeddings"), "embed", ["a.npy"])
    c = cluster.cluster_pairs(x, x + 0.1, 3, 0.2, seed=0, n_init=1, batch_size=20)
    cluster.save_clusters(tmp_path / "clusters", c, np.arange(40), made_from=[emb])
    assert cluster.load_clusters(tmp_path / "clusters", np.arange(40), made_from=[emb]).n_clusters == 3
    other = artifacts.write_manifest(_folder(tmp_path, "embeddings", value=3), "embed", ["a.npy"])
    with pytest.raises(ValueError, match=rf"clusters was made from embed run {emb.token}, but .*embeddings holds "
                                         rf"embed run {other.token}: rerun the cluster stage"):
        cluster.load_clusters(tmp_path / "clusters", np.arange(40), made_from=[other])
    # labels of another k-means run written into the folder (an interrupted run) are named
    data.save_npy(tmp_path / "clusters" / "image_labels.npy", (c.image_labels + 1) % 3)  # the same clusters renamed
    with pytest.raises(ValueError, match="image_labels.npy is not the file run"):
        cluster.load_clusters(tmp_path / "clusters")


def test_read_errors_name_the_file_and_what_to_rerun(tmp_path):
    out = tmp_path / "clusters"
    data.save_npy(out / "keep.npy", np.ones(1000, bool))
    raw = (out / "keep.npy").read_bytes()
    (out / "keep.npy").write_bytes(raw[:len(raw) // 2])  # truncated
    with pytest.raises(ValueError, match=r"clusters/keep.npy is unreadable or truncated.*rerun the cluster stage"):
        data.load_npy(out / "keep.npy")
    (tmp_path / "embeddings").mkdir()
    (tmp_path / "embeddings" / "images.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ValueError, match=r"embeddings/images.parquet is not a readable parquet table.*embed stage"):
        data.load_table(tmp_path / "embeddings" / "images.parquet")
    (tmp_path / "prototypes").mkdir()
    (tmp_path / "prototypes" / "summary.json").write_text('{"n_clusters": ')
    with pytest.raises(ValueError, match=r"prototypes/summary.json is not valid JSON.*match stage"):
        data.load_json(tmp_path / "prototypes" / "summary.json")
    with pytest.raises(FileNotFoundError, match=r"synthetic/x.npy does not exist: run the synthesize stage"):
        data.load_npy(tmp_path / "synthetic" / "x.npy")
