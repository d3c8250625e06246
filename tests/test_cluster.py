"""pds.cluster: noise filter, k-means on separated blobs, determinism, validation, artefacts."""

import numpy as np
import pandas as pd
import pytest
from fakes import fake_tables

from pds import cluster


def blobs(n_per: int = 60, k: int = 5, d: int = 8, seed: int = 0, scale: float = 10.0):
    """k well-separated gaussian blobs: (x (k * n_per, d) float32, truth labels)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * scale
    truth = np.repeat(np.arange(k), n_per)
    return (centres[truth] + rng.normal(size=(len(truth), d))).astype(np.float32), truth


def same_partition(a, b):
    """True when labelings a and b are equal up to renaming the clusters."""
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("algorithm", ["minibatch", "kmeans", "faiss"])
def test_kmeans_recovers_separated_blobs(algorithm):
    x, truth = blobs()
    labels, centroids, inertia = cluster.kmeans(x, 5, seed=0, algorithm=algorithm, batch_size=100, n_init=5)
    assert same_partition(labels, truth)
    assert centroids.shape == (5, 8) and centroids.dtype == np.float32 and labels.dtype == np.int64
    naive = sum(((x[labels == c] - centroids[c]) ** 2).sum() for c in range(5))
    assert inertia == pytest.approx(naive, rel=1e-4)


@pytest.mark.parametrize("algorithm", ["minibatch", "kmeans", "faiss"])
def test_same_seed_same_labels(algorithm):
    x, _ = blobs(k=8, scale=1.0)  # overlapping blobs, so the result depends on the seed's choices
    a = cluster.kmeans(x, 8, seed=3, algorithm=algorithm, batch_size=64, n_init=2)
    b = cluster.kmeans(x, 8, seed=3, algorithm=algorithm, batch_size=64, n_init=2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]


def test_faiss_trains_on_the_stated_sample_and_assigns_every_row():
    x, truth = blobs(n_per=200, k=5)
    rows = cluster.sample_rows(len(x), 150, seed=4)
    assert len(rows) == 150 and np.all(np.diff(rows) > 0)
    labels, centroids, _ = cluster.kmeans(x, 5, seed=4, algorithm="faiss", sample_size=150)
    np.testing.assert_array_equal(centroids, cluster.faiss_train(x[rows], 5, seed=4))  # only the sample trains
    assert same_partition(labels, truth) and len(labels) == len(x)
    d2 = ((x[:, None, :].astype(np.float64) - centroids[None]) ** 2).sum(-1)  # (n, K) naive distances
    np.testing.assert_array_equal(labels, d2.argmin(1))
    with pytest.raises(ValueError, match="n_clusters=5 exceeds the k-means sample"):
        cluster.kmeans(x, 5, seed=0, algorithm="faiss", sample_size=4)


def test_faiss_openblas_kernel_is_not_a_generic_fallback():
    """faiss-cpu bundles its own OpenBLAS, which picks a generic kernel on CPUs it does not know (Barcelona on
    AMD EPYC) unless OPENBLAS_CORETYPE is set; import_faiss sets it when unset on an AVX2 + FMA CPU."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    code = "import numpy; from pds import cluster; print(cluster.faiss_openblas_kernel())"
    kernel = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            check=True).stdout.split()[-1]
    if cluster._cpu_has("avx2", "fma"):
        assert kernel == "Haswell"
    assert kernel not in cluster.SLOW_OPENBLAS


def test_pair_cosine_matches_naive_loop():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(20, 6)).astype(np.float32), rng.normal(size=(20, 6)).astype(np.float32)
    a[3] *= 1000  # cosine ignores the norm (embeddings are unnormalised)
    naive = [float(u @ v / np.linalg.norm(u) / np.linalg.norm(v)) for u, v in zip(a, b, strict=True)]
    np.testing.assert_allclose(cluster.pair_cosine(a, b), naive, rtol=1e-5)


def test_noise_filter_drops_the_lowest_fraction_with_stable_ties():
    cos = np.array([0.5, 0.1, 0.1, 0.9, 0.1])
    np.testing.assert_array_equal(cluster.noise_filter(cos, 0.4), [True, False, False, True, True])
    assert cluster.noise_filter(cos, 0.0).all()
    rng = np.random.default_rng(0)
    cos = rng.random(1000)
    keep = cluster.noise_filter(cos, 0.2)
    assert keep.sum() == 800 and cos[~keep].max() < cos[keep].min()


def test_cluster_pairs_filters_then_clusters_each_modality():
    x, truth = blobs(n_per=50, k=4)
    rng = np.random.default_rng(2)
    text = x + rng.normal(size=x.shape).astype(np.float32)  # a caption lies near its image
    text[:10] = -x[:10]  # ten mismatched captions: the lowest cosines, so they are the ones dropped
    c = cluster.cluster_pairs(x, text, n_clusters=4, rm_ratio=0.05, seed=0, n_init=5, batch_size=100)
    assert not c.keep[:10].any() and c.keep[10:].all()
    assert same_partition(c.image_labels, truth[c.keep]) and same_partition(c.text_labels, truth[c.keep])
    again = cluster.cluster_pairs(x, text, n_clusters=4, rm_ratio=0.05, seed=0, n_init=5, batch_size=100)
    np.testing.assert_array_equal(c.image_labels, again.image_labels)
    np.testing.assert_array_equal(c.text_centroids, again.text_centroids)


def test_train_pairs_take_train_captions_and_repeat_images():
    images, captions = fake_tables(n_images=10, captions_per_image=2)
    image_emb = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    text_emb = np.arange(20, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    img, txt, caption_ids, image_ids = cluster.train_pairs(image_emb, text_emb, captions)
    train = captions[captions.split == "train"]
    np.testing.assert_array_equal(caption_ids, train.caption_id)
    np.testing.assert_array_equal(img[:, 0], train.image_id)
    np.testing.assert_array_equal(txt[:, 0], train.caption_id)
    with pytest.raises(ValueError, match="stale"):
        cluster.train_pairs(image_emb, text_emb[:-1], captions)
    with pytest.raises(ValueError, match="no train-split"):
        cluster.train_pairs(image_emb, text_emb, captions.assign(split="test"))


@pytest.mark.parametrize("bad, message", [
    ({"n_clusters": 90}, "lower base.n_pairs or cluster.rm_ratio"),  # 100 pairs, 80 kept
    ({"n_clusters": 0}, "n_clusters=0 must be a whole number >= 1.*positive count"),  # not "lower"
    ({"n_clusters": -3}, "n_clusters=-3 must be a whole number >= 1.*positive count"),
    ({"n_init": 0}, "n_init=0 must be a whole number >= 1"),
    ({"rm_ratio": 1.0}, r"must be in \[0, 1\)"),
    ({"rm_ratio": -0.1}, r"must be in \[0, 1\)"),
    ({"algorithm": "dbscan"}, "unknown k-means algorithm"),
])
def test_bad_parameters_raise_clear_errors(bad, message):
    x, _ = blobs(n_per=20, k=5)
    args = {"n_clusters": 5, "rm_ratio": 0.2, "seed": 0, "n_init": 1, "batch_size": 50} | bad
    with pytest.raises(ValueError, match=message):
        cluster.cluster_pairs(x, x + 1, **args)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_embeddings_name_the_row(value):
    x, _ = blobs(n_per=20, k=5)
    bad = x.copy()
    bad[7, 2] = value
    with pytest.raises(ValueError, match="image_pairs has NaN/inf values .*row 7"):
        cluster.cluster_pairs(bad, x, n_clusters=5, n_init=1)
    with pytest.raises(ValueError, match="text_pairs has NaN/inf values .*row 7"):
        cluster.cluster_pairs(x, bad, n_clusters=5, n_init=1)


def test_mismatched_pair_counts_and_dims_raise():
    x, _ = blobs(n_per=20, k=5)
    with pytest.raises(ValueError, match="100 rows but text_pairs has 99"):
        cluster.cluster_pairs(x, x[:-1], n_clusters=5)
    with pytest.raises(ValueError, match="share one CLIP space"):
        cluster.cluster_pairs(x, x[:, :4], n_clusters=5)


def test_nearest_members_are_distinct_and_nearest_first():
    x = np.array([[0.0], [3.0], [1.0], [1.0], [9.0]], np.float32)
    labels = np.array([0, 0, 0, 0, 1])
    ids = np.array([10, 11, 12, 12, 13])  # rows 2 and 3 are two captions of one image
    got = cluster.nearest_members(x, labels, np.array([[0.9], [9.0]], np.float32), ids, cluster=0, n=5)
    np.testing.assert_array_equal(got, [12, 10, 11])


def test_save_load_roundtrip_and_same_bytes(tmp_path):
    x, _ = blobs(n_per=30, k=4)
    ids = np.arange(len(x)) * 2
    for run in ("a", "b"):
        c = cluster.cluster_pairs(x, x[:, ::-1].copy(), n_clusters=4, seed=0, n_init=2, batch_size=50)
        cluster.save_clusters(tmp_path / run, c, ids, {"seed": 0})
    for f in sorted((tmp_path / "a").iterdir()):
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes(), f.name
    back = cluster.load_clusters(tmp_path / "a", caption_ids=ids)
    for name in ("keep", "image_labels", "text_labels", "image_centroids", "text_centroids"):
        np.testing.assert_array_equal(getattr(back, name), getattr(c, name))
    assert back.image_inertia == pytest.approx(c.image_inertia)
    with pytest.raises(ValueError, match="other training pairs"):
        cluster.load_clusters(tmp_path / "a", caption_ids=ids + 1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cluster.load_clusters(tmp_path / "missing")


def test_summary_counts_empty_clusters():
    c = cluster.Clusters(np.ones(4, bool), np.array([0, 0, 2, 2]), np.array([0, 1, 2, 0]),
                         np.zeros((3, 2), np.float32), np.zeros((3, 2), np.float32), 1.0, 2.0)
    s = cluster.summarize(c)
    assert s["image"]["empty_clusters"] == 1 and s["text"]["empty_clusters"] == 0 and s["n_kept"] == 4
    assert pd.Series(s["image"]).notna().all()
