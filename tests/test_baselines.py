"""Coreset baselines: herding and k-center equal naive reference implementations on tiny data."""

import numpy as np
import pytest

from pds import baselines


def naive_herding(x, m):
    """Textbook herding: at step t pick the unchosen point that brings the selection's mean closest to the
    data mean."""
    mu = x.mean(axis=0)
    chosen = []
    for _ in range(m):
        best, best_d = None, np.inf
        for i in range(len(x)):
            if i in chosen:
                continue
            d = np.linalg.norm(mu - x[chosen + [i]].mean(axis=0))
            if d < best_d - 1e-12:
                best, best_d = i, d
        chosen.append(best)
    return chosen


def naive_kcenter(x, m, first):
    chosen = [first]
    while len(chosen) < m:
        best, best_d = None, -1.0
        for i in range(len(x)):
            if i in chosen:
                continue
            d = min(np.linalg.norm(x[i] - x[j]) for j in chosen)
            if d > best_d + 1e-12:
                best, best_d = i, d
        chosen.append(best)
    return chosen


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_herding_matches_naive_reference(seed):
    x = np.random.default_rng(seed).normal(size=(30, 4))
    assert baselines.select_herding(x, 8).tolist() == naive_herding(x, 8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kcenter_matches_naive_reference(seed):
    x = np.random.default_rng(seed).normal(size=(30, 4))
    got = baselines.select_kcenter(x, 8, seed=seed)
    assert got.tolist() == naive_kcenter(x, 8, int(got[0]))
    assert got[0] == np.random.default_rng(seed).integers(30)  # the seeded first centre


def test_kcenter_covers_separated_blobs_and_never_repeats():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=float)
    x = np.repeat(centres, 5, axis=0) + 0.01 * rng.normal(size=(20, 2))
    got = baselines.select_kcenter(x, 4, seed=3)
    assert sorted(got // 5) == [0, 1, 2, 3]  # one pick per blob
    dup = np.zeros((6, 2))  # all points identical: still 6 distinct picks
    assert sorted(baselines.select_kcenter(dup, 6, seed=0)) == list(range(6))


def test_random_is_seeded_distinct_and_sorted():
    a, b = baselines.select_random(100, 10, seed=5), baselines.select_random(100, 10, seed=5)
    assert (a == b).all() and len(set(a)) == 10 and (np.diff(a) > 0).all()
    assert not (a == baselines.select_random(100, 10, seed=6)).all()


def test_pair_features_concatenate_unit_vectors():
    rng = np.random.default_rng(0)
    f = baselines.pair_features(rng.normal(size=(5, 3)) * 7, rng.normal(size=(5, 2)))
    assert f.shape == (5, 5)
    np.testing.assert_allclose(np.linalg.norm(f[:, :3], axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(f[:, 3:], axis=1), 1, rtol=1e-5)


@pytest.mark.parametrize("select", [lambda n, m: baselines.select_random(n, m, 0),
                                    lambda n, m: baselines.select_herding(np.ones((n, 2)), m),
                                    lambda n, m: baselines.select_kcenter(np.ones((n, 2)), m, 0)])
def test_budget_larger_than_the_data_is_refused(select):
    with pytest.raises(ValueError, match="budget"):
        select(5, 6)
    with pytest.raises(ValueError, match="no candidate"):
        select(0, 1)


def test_nan_embeddings_are_refused():
    x = np.ones((4, 2))
    x[1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        baselines.pair_features(x, np.ones((4, 2)))


def naive_random_images(image_ids, m, seed):
    """The documented rule, step by step: random's draw; a pair whose image a lower position already holds is
    replaced by a draw among the pairs of images not yet held, until every image is distinct."""
    rng = np.random.default_rng(seed)
    pos = sorted(rng.choice(len(image_ids), size=m, replace=False).tolist())
    while True:
        held, kept = set(), []
        for p in pos:
            if image_ids[p] not in held:
                held.add(image_ids[p])
                kept.append(p)
        if len(kept) == m:
            return kept
        free = [j for j in range(len(image_ids)) if image_ids[j] not in held]
        pos = sorted(kept + rng.choice(free, size=m - len(kept), replace=False).tolist())


@pytest.mark.parametrize("seed", range(6))
def test_random_images_match_naive_reference_and_hold_distinct_images(seed):
    image_ids = np.random.default_rng(100 + seed).integers(0, 9, size=30)  # ~3 pairs per image: collisions likely
    got = baselines.select_random_images(image_ids, 7, seed)
    assert got.tolist() == naive_random_images(image_ids, 7, seed)
    assert len(set(image_ids[got])) == 7 and (np.diff(got) > 0).all()


def test_random_images_equal_random_where_its_images_are_distinct():
    image_ids = np.arange(40) // 2  # two pairs per image
    same = 0
    for seed in range(20):
        plain = baselines.select_random(len(image_ids), 4, seed)
        if len(set(image_ids[plain])) == 4:
            same += 1
            assert baselines.select_random_images(image_ids, 4, seed).tolist() == plain.tolist()
    assert same >= 10  # the comparison ran
    with pytest.raises(ValueError, match="distinct images"):
        baselines.select_random_images(image_ids, 21, 0)
