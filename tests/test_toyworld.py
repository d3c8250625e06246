"""The toy world generator: determinism, Karpathy-format output, captions true to their images."""

import hashlib

import numpy as np
import pytest
from PIL import Image

from pds.data import load_dataset, load_json
from pds.toy.world import (
    ARRANGEMENTS,
    BACKGROUND_RGB,
    BACKGROUNDS,
    COLOURS,
    COUNTS,
    POSITIONS,
    RGB,
    SHAPES,
    SIZES,
    draw_image,
    generate_toyworld,
    make_captions,
    parse_caption,
    sample_attributes,
)

SIZES_SMALL = dict(n_train=20, n_val=5, n_test=5, image_size=32)


def _hashes(root) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen") / "toyworld"
    generate_toyworld(root, seed=0, **SIZES_SMALL)
    return root


def test_same_seed_gives_byte_identical_files(world, tmp_path):
    again = tmp_path / "toyworld"
    generate_toyworld(again, seed=0, **SIZES_SMALL)
    first, second = _hashes(world), _hashes(again)
    assert len(first) == 30 + 1
    assert first == second


def test_different_seed_differs(world, tmp_path):
    other = tmp_path / "toyworld"
    generate_toyworld(other, seed=1, **SIZES_SMALL)
    a, b = _hashes(world), _hashes(other)
    assert a.keys() == b.keys()
    assert sum(a[k] != b[k] for k in a) >= 25  # nearly every image and the annotation file change


def test_rerun_with_fewer_images_removes_stale_files(tmp_path):
    root = tmp_path / "toyworld"
    generate_toyworld(root, n_train=6, n_val=2, n_test=2, seed=0)
    (root / "images" / ".000001.png.abc.tmp").write_bytes(b"half-written")
    generate_toyworld(root, n_train=3, n_val=1, n_test=1, seed=0)
    assert sorted(p.name for p in (root / "images").iterdir()) == [f"{i:06d}.png" for i in range(5)]


def test_test_split_does_not_depend_on_train_size(tmp_path):
    a, b = tmp_path / "a" / "toyworld", tmp_path / "b" / "toyworld"
    generate_toyworld(a, n_train=3, n_val=1, n_test=2, seed=0)
    generate_toyworld(b, n_train=5, n_val=1, n_test=2, seed=0)
    ea, eb = load_json(a / "dataset_toyworld.json")["images"], load_json(b / "dataset_toyworld.json")["images"]
    test_a = [(e["attributes"], [s["raw"] for s in e["sentences"]]) for e in ea if e["split"] == "test"]
    test_b = [(e["attributes"], [s["raw"] for s in e["sentences"]]) for e in eb if e["split"] == "test"]
    assert test_a == test_b
    assert (a / "images" / "000004.png").read_bytes() == (b / "images" / "000006.png").read_bytes()


def test_loads_through_the_shared_loader(world):
    images, captions = load_dataset(world)
    assert images.split.value_counts().to_dict() == {"train": 20, "val": 5, "test": 5}
    assert len(captions) == 5 * 30
    assert (captions.groupby("image_id").size() == 5).all()
    assert captions.split.value_counts().to_dict() == {"train": 100, "val": 25, "test": 25}
    data = load_json(world / "dataset_toyworld.json")
    assert data["dataset"] == "toyworld"
    for e in data["images"]:
        assert e["sentids"] == [s["sentid"] for s in e["sentences"]]
        assert all(s["imgid"] == e["imgid"] for s in e["sentences"])
        assert (world / e["filepath"] / e["filename"]).is_file()


def test_every_caption_is_true_to_its_image(world):
    data = load_json(world / "dataset_toyworld.json")
    for e in data["images"]:
        attrs = e["attributes"]
        raws = [s["raw"] for s in e["sentences"]]
        assert len(set(raws)) == 5, raws
        for s in e["sentences"]:
            for text in (s["raw"], " ".join(s["tokens"])):  # as written and as the loader preprocesses it
                parsed = parse_caption(text)
                assert {"shape", "colour", "count"} <= parsed.keys(), text
                assert {k: attrs[k] for k in parsed} == parsed, (text, attrs)
            assert 5 <= len(s["tokens"]) <= 18


def test_captions_true_on_many_attribute_sets():
    # no drawing: 2,000 scenes x 5 captions through the parser, and the space of scenes is large
    rng = np.random.default_rng(123)
    combos, n_words, mentioned = set(), [], {k: 0 for k in ("size", "position", "background", "arrangement")}
    for _ in range(2000):
        attrs = sample_attributes(rng)
        combos.add(tuple(attrs.values()))
        caps = make_captions(attrs, rng, n=5)
        assert len(set(caps)) == 5
        for cap in caps:
            parsed = parse_caption(cap)
            assert {k: attrs[k] for k in parsed} == parsed, (cap, attrs)
            assert {"shape", "colour", "count"} <= parsed.keys()
            n_words.append(len(cap.split()))
            for k in mentioned:
                mentioned[k] += k in parsed
    assert len(combos) > 1300  # 5,040 possible scenes: a test set rarely repeats one
    assert 9 <= np.mean(n_words) <= 15
    assert all(v > 2000 for v in mentioned.values())  # optional attributes appear often, not always


def test_parse_caption_reads_synonyms_and_rejects_contradictions():
    assert parse_caption("Red circle, small, upper left, white background.") == {
        "shape": "circle", "count": 1, "colour": "red", "size": "small", "position": "top left",
        "background": "white"}
    assert parse_caption("a pair of big violet discs stacked vertically down the middle on grey") == {
        "shape": "circle", "colour": "purple", "size": "large", "count": 2, "arrangement": "column",
        "position": "center", "background": "gray"}
    # 'across' is not a cross: whole words only
    assert parse_caption("three boxes side by side across the bottom against diagonal stripes") == {
        "shape": "square", "count": 3, "arrangement": "row", "position": "bottom", "background": "striped"}
    assert parse_caption("two plus signs") == {"shape": "cross", "count": 2}
    assert parse_caption("two rhombuses") == {"shape": "diamond", "count": 2}
    with pytest.raises(ValueError, match="colour"):
        parse_caption("a red and blue circle")


def test_images_show_the_described_objects(world):
    data = load_json(world / "dataset_toyworld.json")
    for e in data["images"]:
        attrs = e["attributes"]
        img = Image.open(world / "images" / e["filename"])
        assert img.size == (32, 32) and img.mode == "RGB"
        px = np.asarray(img).reshape(-1, 3).astype(float)  # (1024, 3)
        near = {c: np.linalg.norm(px - np.array(RGB[c]), axis=1) < 50 for c in COLOURS}
        assert near[attrs["colour"]].sum() >= 8 * attrs["count"], attrs
        assert max(near, key=lambda c: near[c].sum()) == attrs["colour"], attrs
        if attrs["count"] == 1:  # the object's centroid lies in its grid cell
            ys, xs = np.nonzero(near[attrs["colour"]].reshape(32, 32))
            col = "left" if xs.mean() < 32 / 3 else "right" if xs.mean() > 64 / 3 else None
            row = "top" if ys.mean() < 32 / 3 else "bottom" if ys.mean() > 64 / 3 else None
            assert (" ".join(w for w in (row, col) if w) or "center") == attrs["position"], attrs


def test_colours_contrast_with_every_background():
    for colour in COLOURS:
        for bg in BACKGROUNDS:
            for tone in BACKGROUND_RGB[bg]:
                assert np.linalg.norm(np.subtract(RGB[colour], tone)) > 120, (colour, bg)


def test_draw_image_size_and_jitter():
    attrs = {"shape": "triangle", "colour": "blue", "size": "large", "count": 3, "arrangement": "column",
             "position": "right", "background": "striped"}
    a = draw_image(attrs, 48, np.random.default_rng(0))
    b = draw_image(attrs, 48, np.random.default_rng(1))
    assert a.size == (48, 48)
    assert not np.array_equal(np.asarray(a), np.asarray(b))  # same scene, different jitter
    assert np.array_equal(np.asarray(a), np.asarray(draw_image(attrs, 48, np.random.default_rng(0))))


def test_constants_cover_sampled_attributes():
    rng = np.random.default_rng(0)
    seen = [sample_attributes(rng) for _ in range(500)]
    for key, allowed in (("shape", SHAPES), ("colour", COLOURS), ("size", SIZES), ("count", COUNTS),
                         ("background", BACKGROUNDS), ("arrangement", ARRANGEMENTS), ("position", POSITIONS)):
        assert {s[key] for s in seen} == set(allowed), key


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_train=0), "n_train"), (dict(n_val=-1), "n_val"), (dict(n_test=2.5), "n_test"),
    (dict(image_size=8), "image_size"), (dict(seed=-1), "seed"),
])
def test_bad_arguments_raise(tmp_path, kwargs, match):
    args = dict(n_train=2, n_val=1, n_test=1, image_size=32, seed=0) | kwargs
    with pytest.raises(ValueError, match=match):
        generate_toyworld(tmp_path / "toyworld", **args)
    assert not (tmp_path / "toyworld").exists()  # nothing written before the arguments are checked


def test_draw_image_rejects_unknown_attributes():
    attrs = {"shape": "hexagon", "colour": "red", "size": "small", "count": 1, "arrangement": "single",
             "position": "center", "background": "white"}
    with pytest.raises(ValueError, match="shape"):
        draw_image(attrs)
