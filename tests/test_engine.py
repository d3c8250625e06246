"""The streamed passes against the in-memory stages, on a real local Ray cluster (started once, 2 CPUs)."""

import numpy as np
import pandas as pd
import pytest

from pds import cluster, engine, match, shards

K, D = 6, 16


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def blobs(n=1800, seed=0):
    """Pairs around K separated centres; 60 captions replaced by noise; a block of duplicated pairs makes
    cosine ties at the noise threshold likely."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(K, D)) * 6
    lab = rng.integers(0, K, n)
    img = (centres[lab] + rng.normal(size=(n, D))).astype(np.float32)
    txt = (centres[lab] + rng.normal(size=(n, D))).astype(np.float32)
    txt[:60] = rng.normal(size=(60, D)) * 6
    img[100:400], txt[100:400] = img[100], txt[100]  # 300 identical pairs: one cosine, many ties
    meta = pd.DataFrame({"caption_id": np.arange(n) + 1000, "image_id": np.arange(n) // 5,
                         "caption": [f"caption {i}" for i in range(n)]})
    return img, txt, meta


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    img, txt, meta = blobs()
    shards.write_shards(root, img, txt, meta, shard_size=500, dtype="float32")  # 4 shards, the last short
    return img, txt, meta, shards.open_shards(root)


@pytest.mark.parametrize("rm_ratio", [0.0, 0.1, 0.2, 0.5])
def test_threshold_is_noise_filter(data, tmp_path, rm_ratio):
    img, txt, _, s = data
    runner = engine.Runner(s, tmp_path, "local")
    threshold, cosine = engine.noise_threshold(runner, rm_ratio)
    keep = np.concatenate([engine.keep_mask(cosine(i)["key"], threshold.as_params(), int(threshold.ties_before[i]))
                           for i in range(s.n_shards)])
    ref = cluster.noise_filter(cluster.pair_cosine(img, txt), rm_ratio)
    np.testing.assert_array_equal(keep, ref)
    if rm_ratio == 0.2:
        assert threshold.drop_ties > 0  # the duplicated pairs straddle the threshold: the tie rule is exercised


def test_sort_key_orders_like_floats():
    x = np.array([-1.0, -0.5, -0.0, 0.0, 1e-30, 0.25, 1.0, -1e-30], np.float32)
    key = engine.sort_key(x)
    assert np.array_equal(np.argsort(key, kind="stable"), np.argsort(x, kind="stable"))
    assert key[2] == key[3]


def in_memory(img, txt, meta, clusters):
    keep = clusters.keep
    ov = match.overlap_matrix(clusters.image_labels, clusters.text_labels, K)
    rows, cols = match.match_clusters(ov)
    protos = match.prototypes(img[keep], txt[keep], meta.caption_id.to_numpy()[keep], clusters.image_labels,
                              clusters.text_labels, rows, cols, clusters.image_centroids, clusters.text_centroids)
    prompt_rows, prompt_cos = match.retrieve_captions(protos.text, txt)
    return ov, protos, meta.caption_id.to_numpy()[prompt_rows], prompt_cos


def check_equal(res, s, img, txt, meta, clusters):
    ov, protos, prompt_ids, prompt_cos = in_memory(img, txt, meta, clusters)
    np.testing.assert_array_equal(res.keep(s.n_shards), clusters.keep)
    np.testing.assert_array_equal(res.labels("image", s.n_shards), clusters.image_labels)
    np.testing.assert_array_equal(res.labels("text", s.n_shards), clusters.text_labels)
    np.testing.assert_array_equal(res.overlap, ov)
    np.testing.assert_array_equal(res.prototypes.image, protos.image)
    np.testing.assert_array_equal(res.prototypes.text, protos.text)
    np.testing.assert_array_equal(res.prototypes.overlap, protos.overlap)
    for a, b in zip(res.prototypes.members, protos.members, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(res.prompt_caption_ids, prompt_ids)
    # pds.match's cosine is a float32 matrix product; the streamed one is exact in float64, then float32
    np.testing.assert_allclose(res.prompt_cosine, prompt_cos, atol=1e-6)
    assert res.image_inertia == pytest.approx(clusters.image_inertia, rel=1e-12)


def test_given_centroids_equal_in_memory_match(data, tmp_path):
    img, txt, meta, s = data
    ref = cluster.cluster_pairs(img, txt, K, 0.2, seed=0, algorithm="kmeans", n_init=2)
    keep = ref.keep
    # the streamed labels are the nearest given centroid; on separated blobs they are sklearn's labels
    np.testing.assert_array_equal(cluster.assign(img[keep], ref.image_centroids), ref.image_labels)
    res = engine.run_pds(s, tmp_path, K, 0.2, seed=0, centroids=(ref.image_centroids, ref.text_centroids),
                         members=True, engine="local")
    check_equal(res, s, img, txt, meta, ref)


def test_faiss_sample_equals_in_memory_faiss(data, tmp_path):
    img, txt, meta, s = data
    ref = cluster.cluster_pairs(img, txt, K, 0.2, seed=3, algorithm="faiss", sample_size=700)
    res = engine.run_pds(s, tmp_path, K, 0.2, seed=3, sample_size=700, members=True, engine="local")
    np.testing.assert_array_equal(res.image_centroids, ref.image_centroids)
    np.testing.assert_array_equal(res.text_centroids, ref.text_centroids)
    check_equal(res, s, img, txt, meta, ref)


def outputs(res, n_shards):
    p = res.prototypes
    return [res.keep(n_shards), res.labels("image", n_shards), res.labels("text", n_shards), res.image_centroids,
            res.text_centroids, res.overlap, res.rows, res.cols, p.image, p.text, p.overlap, p.fallback,
            res.prompt_caption_ids, res.prompt_cosine, np.array([res.image_inertia, res.text_inertia]),
            *p.members]


def test_ray_equals_local_byte_for_byte(data, tmp_path, ray_cluster):
    *_, s = data
    runs = {name: engine.run_pds(s, tmp_path / name, K, 0.2, seed=1, sample_size=900, members=True, engine=name)
            for name in ("local", "ray")}
    a, b = (outputs(runs[name], s.n_shards) for name in ("local", "ray"))
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


def test_resume_after_killed_pass(data, tmp_path, monkeypatch, ray_cluster):
    *_, s = data
    reference = engine.run_pds(s, tmp_path / "whole", K, 0.2, seed=1, sample_size=900, engine="local")
    calls = []
    real = engine.TASKS["assign"]

    def dies_on_shard_2(shards_, i, params):
        calls.append(i)
        if i == 2:
            raise KeyboardInterrupt  # as if the pass were killed while shard 2 ran
        return real(shards_, i, params)

    monkeypatch.setitem(engine.TASKS, "assign", dies_on_shard_2)
    with pytest.raises(KeyboardInterrupt):
        engine.run_pds(s, tmp_path / "killed", K, 0.2, seed=1, sample_size=900, engine="local")
    assert calls == [0, 1, 2]
    folder = next((tmp_path / "killed").glob("assign-*"))
    assert sorted(p.name for p in folder.iterdir()) == ["shard_0.npz", "shard_1.npz"]  # nothing partial left
    (folder / ".shard_2.npz.half.tmp").write_bytes(b"PK\x03\x04 cut off")  # what a SIGKILL mid-write leaves
    monkeypatch.setitem(engine.TASKS, "assign", real)
    # resumed on the other engine: the finished shards' files are reused, shards 2 and 3 are computed
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.glob("shard_*.npz")}
    resumed = engine.run_pds(s, tmp_path / "killed", K, 0.2, seed=1, sample_size=900, engine="ray")
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("shard_[01].npz")} == stamps
    assert (folder / "shard_3.npz").exists()
    for x, y in zip(outputs(reference, s.n_shards), outputs(resumed, s.n_shards), strict=True):
        assert x.tobytes() == y.tobytes()


def test_bad_shard_named_on_both_engines(tmp_path, ray_cluster):
    img, txt, meta = blobs(n=300)
    img[250, 3] = np.nan
    shards.write_shards(tmp_path / "s", img, txt, meta, shard_size=100, dtype="float32")
    s = shards.open_shards(tmp_path / "s")
    for name in ("local", "ray"):
        with pytest.raises(ValueError, match=r"^shard 2 \(.*img_emb_2.npy\): image_pairs has NaN/inf values "
                                             r"\(first in row 50\)") as e:
            engine.run_pds(s, tmp_path / name, K, 0.2, engine=name)
        assert "\n" not in str(e.value)


def test_streamed_run_writes_the_match_stage_files(data, tmp_path, monkeypatch, capsys):
    img, txt, meta, s = data
    monkeypatch.setenv("PDS_ENGINE", "local")
    engine.main([str(s.root), str(tmp_path / "work"), str(tmp_path / "out"), "--n-clusters", str(K), "--seed", "3",
                 "--sample-size", "700", "--members"])
    assert f"{K} prototypes from 1,800 pairs (4 shards, PDS_ENGINE=local)" in capsys.readouterr().out
    got = match.load_prototypes(tmp_path / "out")
    ref = cluster.cluster_pairs(img, txt, K, 0.2, seed=3, algorithm="faiss", sample_size=700)
    ov, protos, prompt_ids, _ = in_memory(img, txt, meta, ref)
    np.testing.assert_array_equal(got.image, protos.image)
    np.testing.assert_array_equal(got.text, protos.text)
    for a, b in zip(got.members, protos.members, strict=True):
        np.testing.assert_array_equal(a, b)
    prompts = pd.read_parquet(tmp_path / "out" / "prompts.parquet")
    assert prompts["caption"].tolist() == [f"caption {c - 1000}" for c in prompt_ids]
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "overlap.npy"), ov)


def test_engine_choice(monkeypatch):
    monkeypatch.setenv("PDS_ENGINE", "spark")
    with pytest.raises(ValueError, match="PDS_ENGINE='spark'; use one of"):
        engine.engine_name()
    monkeypatch.setenv("PDS_ENGINE", "ray")
    assert engine.engine_name() == "ray"


def test_nearest_rows_is_brute_force():
    rng = np.random.default_rng(0)
    db = rng.normal(size=(20000, 8)).astype(np.float16)
    db[15000] = db[3]  # an exact tie: the lower row wins
    q = np.concatenate([np.asarray(db[[3]], np.float32), rng.normal(size=(4, 8)).astype(np.float32)])
    rows, cos = engine.nearest_rows(q, db)
    x = np.asarray(db, np.float64)
    full = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (x / np.linalg.norm(x, axis=1, keepdims=True)).T
    np.testing.assert_array_equal(rows, np.argmax(full, axis=1))
    assert rows[0] == 3
    np.testing.assert_allclose(cos, full.max(axis=1), rtol=0, atol=1e-7)
