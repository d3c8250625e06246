"""pds.match: overlap matrix, Hungarian matching, prototypes, empty intersections, caption retrieval."""

import itertools

import numpy as np
import pandas as pd
import pytest

from pds import match


def test_overlap_matrix_matches_naive_count_and_stays_k_by_k():
    rng = np.random.default_rng(0)
    img, txt = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    img[img == 3] = 2  # image cluster 3 has no member: the matrix keeps its (zero) row
    c = match.overlap_matrix(img, txt, 4)
    naive = np.zeros((4, 4), int)
    for i, j in zip(img, txt, strict=True):
        naive[i, j] += 1
    np.testing.assert_array_equal(c, naive)
    assert c.sum() == 200 and (c[3] == 0).all()
    with pytest.raises(ValueError, match=r"must lie in \[0, 4\)"):
        match.overlap_matrix(img, txt + 1, 4)
    with pytest.raises(ValueError, match="one label per kept pair"):
        match.overlap_matrix(img, txt[:-1], 4)


def test_hungarian_recovers_a_shuffled_block_diagonal():
    rng = np.random.default_rng(1)
    k = 12
    c = rng.integers(0, 5, (k, k)) + np.diag(rng.integers(50, 100, k))  # image cluster i <-> text cluster i
    perm = rng.permutation(k)
    shuffled = c[:, perm]  # text clusters renamed: column q of shuffled is text cluster perm[q]
    rows, cols = match.match_clusters(shuffled)
    np.testing.assert_array_equal(rows, np.arange(k))
    np.testing.assert_array_equal(perm[cols], np.arange(k))


def test_hungarian_total_equals_brute_force():
    rng = np.random.default_rng(2)
    c = rng.integers(0, 20, (6, 6))
    rows, cols = match.match_clusters(c)
    best = max(c[np.arange(6), list(p)].sum() for p in itertools.permutations(range(6)))
    assert c[rows, cols].sum() == best
    assert sorted(cols.tolist()) == list(range(6))  # one-to-one


def handmade():
    """Six kept pairs, K = 3. Matched pairs (0, 1), (1, 0), (2, 2); intersection (2, 2) is empty."""
    image = np.array([[1, 0], [3, 0], [0, 2], [0, 4], [0, 6], [5, 5]], np.float32)
    text = np.array([[2, 2], [4, 4], [1, 1], [1, 3], [9, 9], [7, 7]], np.float32)
    caption_ids = np.array([10, 11, 12, 13, 14, 15])
    image_labels = np.array([0, 0, 1, 1, 1, 2])
    text_labels = np.array([1, 1, 0, 0, 2, 0])
    rows, cols = np.array([0, 1, 2]), np.array([1, 0, 2])
    centroids = np.array([[100, 0], [0, 100], [-100, 0]], np.float32), np.array([[0, -1], [0, -2], [0, -3]],
                                                                                 np.float32)
    return image, text, caption_ids, image_labels, text_labels, rows, cols, *centroids


def test_prototypes_equal_hand_computed_means_and_fall_back_on_empty():
    p = match.prototypes(*handmade())
    np.testing.assert_allclose(p.image, [[2, 0], [0, 3], [-100, 0]])  # (1+3)/2; (2+4)/2; image centroid 2
    np.testing.assert_allclose(p.text, [[3, 3], [1, 2], [0, -3]])  # (2+4)/2; (1+1)/2, (1+3)/2; text centroid 2
    np.testing.assert_array_equal(p.overlap, [2, 2, 0])
    np.testing.assert_array_equal(p.fallback, [False, False, True])
    assert p.n_empty == 1 and np.isfinite(p.image).all() and np.isfinite(p.text).all()
    assert [m.tolist() for m in p.members] == [[10, 11], [12, 13], []]
    np.testing.assert_array_equal(p.image_cluster, [0, 1, 2])
    np.testing.assert_array_equal(p.text_cluster, [1, 0, 2])
    assert p.image.dtype == np.float32


def test_empty_intersections_can_be_dropped():
    p = match.prototypes(*handmade(), empty="drop")
    assert len(p) == 2 and p.n_empty == 1 and not p.fallback.any()
    np.testing.assert_array_equal(p.image_cluster, [0, 1])
    with pytest.raises(ValueError, match="unknown empty"):
        match.prototypes(*handmade(), empty="nan")


def test_prototypes_match_a_naive_mask_loop_on_random_labels():
    rng = np.random.default_rng(3)
    n, k, d = 300, 7, 5
    image, text = rng.normal(size=(n, d)).astype(np.float32), rng.normal(size=(n, d)).astype(np.float32)
    il, tl = rng.integers(0, k, n), rng.integers(0, k, n)
    rows, cols = match.match_clusters(match.overlap_matrix(il, tl, k))
    cents = rng.normal(size=(k, d)).astype(np.float32)
    p = match.prototypes(image, text, np.arange(n), il, tl, rows, cols, cents, cents)
    for m, (i, j) in enumerate(zip(rows, cols, strict=True)):
        mask = (il == i) & (tl == j)  # the reference's formulation
        np.testing.assert_allclose(p.image[m], image[mask].mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(p.text[m], text[mask].mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(p.members[m], np.flatnonzero(mask))


def test_prototypes_reject_mismatched_inputs():
    args = list(handmade())
    args[1] = args[1][:-1]
    with pytest.raises(ValueError, match="text_pairs has 5 rows but image_pairs has 6"):
        match.prototypes(*args)


def test_retrieval_picks_the_nearest_caption_by_cosine_not_dot_product():
    protos = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    train = np.array([[10.0, 5.0], [1.0, 0.1], [0.0, 2.0], [0.1, 1.0]], np.float32)  # row 0: biggest dot
    idx, cos = match.retrieve_captions(protos, train)
    np.testing.assert_array_equal(idx, [1, 2])
    np.testing.assert_allclose(cos, [1 / np.sqrt(1.01), 1.0], rtol=1e-6)


def test_retrieval_ties_take_the_lowest_index_across_blocks(monkeypatch):
    monkeypatch.setattr(match, "CHUNK", 3)  # several database blocks
    train = np.tile(np.array([[0.0, 1.0]], np.float32), (8, 1))
    train[5] = [1.0, 0.0]
    train[7] = [2.0, 0.0]  # same direction as row 5, later
    idx, _ = match.retrieve_captions(np.array([[1.0, 0.0], [0.0, 1.0]], np.float32), train)
    np.testing.assert_array_equal(idx, [5, 0])


def test_cosine_topk_equals_brute_force(monkeypatch):
    monkeypatch.setattr(match, "CHUNK", 7)
    rng = np.random.default_rng(4)
    q, db = rng.normal(size=(3, 6)).astype(np.float32), rng.normal(size=(40, 6)).astype(np.float32)
    idx, cos = match.cosine_topk(q, db, k=5)
    sims = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (db / np.linalg.norm(db, axis=1, keepdims=True)).T
    np.testing.assert_array_equal(idx, np.argsort(-sims, axis=1)[:, :5])
    np.testing.assert_allclose(cos, np.sort(sims, axis=1)[:, ::-1][:, :5], rtol=1e-5)
    with pytest.raises(ValueError, match="same embedding dimension"):
        match.cosine_topk(q, db[:, :4])
    with pytest.raises(ValueError, match="NaN/inf"):
        match.cosine_topk(q, np.where(db > 2, np.nan, db))


def test_save_load_roundtrip(tmp_path):
    image, text, caption_ids, il, tl, rows, cols, ic, tc = handmade()
    p = match.prototypes(image, text, caption_ids, il, tl, rows, cols, ic, tc)
    captions = pd.DataFrame({"caption_id": np.arange(20), "image_id": np.arange(20), "split": "train",
                             "caption": [f"caption {i}" for i in range(20)]})
    idx, cos = match.retrieve_captions(p.text, text)
    prompts = match.prompts_table(p, caption_ids[idx], cos, captions)
    assert prompts.caption.tolist() == [f"caption {caption_ids[i]}" for i in idx]
    overlap = match.overlap_matrix(il, tl, 3)
    summary = match.summarize(p, overlap, len(il))
    assert summary["n_empty"] == 1 and summary["matched_pairs"] == 4
    match.save_prototypes(tmp_path, p, prompts, overlap, summary)
    back = match.load_prototypes(tmp_path)
    for name in ("image", "text", "image_cluster", "text_cluster", "overlap", "fallback"):
        np.testing.assert_array_equal(getattr(back, name), getattr(p, name))
    assert [m.tolist() for m in back.members] == [m.tolist() for m in p.members] and back.n_empty == 1


def test_check_empty_names_the_parameter():
    match.check_empty("drop")
    with pytest.raises(ValueError, match=r"unknown empty='mean'.*match.empty"):
        match.check_empty("mean")
