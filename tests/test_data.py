"""Dataset loaders (Karpathy and BLIP formats), caption preprocessing, bad input, atomic artefact I/O."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pds import data


def write_png(path, colour=(255, 0, 0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)


def karpathy(root, images):
    (root / "dataset_toy.json").write_text(json.dumps({"dataset": "toy", "images": images}))
    return root / "dataset_toy.json"


def kp_entry(name, split, caps, filepath="imgs"):
    return {"filename": name, "filepath": filepath, "split": split, "sentences": [{"raw": c} for c in caps]}


def all_splits(entries):
    """`entries` plus one val and one test image, so the loaders' every-split check passes."""
    return entries + [kp_entry("v.png", "val", ["a val image"]), kp_entry("t.png", "test", ["a test image"])]


def test_karpathy_tables(tmp_path):
    ann = karpathy(tmp_path, [
        kp_entry("a.png", "train", ["A red Circle.", "a  red disc!"]),
        kp_entry("b.png", "restval", ["Blue square"]),
        kp_entry("c.png", "test", ["green, triangle", "x", "y"]),
        kp_entry("d.png", "val", ["Pink star"]),
    ])
    images, captions = data.load_karpathy(ann)
    assert list(images.columns) == data.IMAGE_COLUMNS and list(captions.columns) == data.CAPTION_COLUMNS
    assert images.image_id.tolist() == [0, 1, 2, 3]
    assert images.path.tolist() == ["imgs/a.png", "imgs/b.png", "imgs/c.png", "imgs/d.png"]
    assert images.split.tolist() == ["train", "train", "test", "val"]  # restval counts as train
    assert captions.caption_id.tolist() == list(range(7))
    assert captions.image_id.tolist() == [0, 0, 1, 2, 2, 2, 3]
    assert captions.caption.tolist()[:3] == ["a red circle", "a red disc", "blue square"]
    assert captions.split.tolist() == ["train"] * 3 + ["test"] * 3 + ["val"]


def test_blip_tables_match_karpathy(tmp_path):
    ann = tmp_path / "annotations"
    ann.mkdir()
    (ann / "flickr30k_train.json").write_text(json.dumps([
        {"image": "imgs/a.png", "caption": "A red Circle.", "image_id": "a"},
        {"image": "imgs/a.png", "caption": "a  red disc!", "image_id": "a"},
        {"image": "imgs/b.png", "caption": "Blue square", "image_id": "b"},
    ]))
    (ann / "flickr30k_val.json").write_text(json.dumps([{"image": "imgs/d.png", "caption": ["pink star"]}]))
    (ann / "flickr30k_test.json").write_text(json.dumps([{"image": "imgs/c.png", "caption": ["green, triangle", "x"]}]))
    images, captions = data.load_dataset(tmp_path, "blip", "flickr30k")
    assert images.path.tolist() == ["imgs/a.png", "imgs/b.png", "imgs/d.png", "imgs/c.png"]
    assert images.split.tolist() == ["train", "train", "val", "test"]
    assert captions.image_id.tolist() == [0, 0, 1, 2, 3, 3]
    assert captions.caption.tolist()[:2] == ["a red circle", "a red disc"]


def test_preprocess_caption():
    assert data.preprocess_caption("A Dog; runs (fast)!  Now.") == "a dog runs fast now"
    long = " ".join(f"w{i}" for i in range(40))
    assert len(data.preprocess_caption(long).split()) == 30
    assert len(data.preprocess_caption(long, max_words=0).split()) == 40


def test_preprocessing_is_switchable(tmp_path):
    ann = karpathy(tmp_path, all_splits([kp_entry("a.png", "train", ["A Red Circle."])]))
    _, captions = data.load_karpathy(ann, preprocess=False)
    assert captions.caption[0] == "A Red Circle."


@pytest.mark.parametrize("images, message", [
    ([kp_entry("a.png", "train", ["x"]), kp_entry("a.png", "test", ["y"])], "duplicates entry 0"),
    ([kp_entry("a.png", "train", ["ok", "  "])], "caption 1 is empty"),
    ([kp_entry("a.png", "train", [])], "has no captions"),
    ([kp_entry("a.png", "holdout", ["x"])], "has split 'holdout'"),
    ([{"filename": "a.png", "split": "train"}], "entry 0 lacks"),
    ([kp_entry("a.png", "train", ["!!!"])], "empty after preprocessing"),
])
def test_karpathy_bad_entries(tmp_path, images, message):
    ann = karpathy(tmp_path, images)
    with pytest.raises(ValueError, match=message):
        data.load_karpathy(ann)


def test_missing_and_malformed_annotation_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="annotation file"):
        data.load_karpathy(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        data.load_karpathy(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ValueError, match="not a Karpathy split file"):
        data.load_karpathy(tmp_path / "list.json")
    with pytest.raises(FileNotFoundError, match="dataset root"):
        data.load_dataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="unknown annotation format"):
        data.load_dataset(tmp_path, "coco-json")


def test_annotation_file_that_is_not_utf8_is_named(tmp_path):
    text = json.dumps({"images": all_splits([kp_entry("café.png", "train", ["un café"])])}, ensure_ascii=False)
    (tmp_path / "latin1.json").write_bytes(text.replace("{", "\n{", 2).encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.json is not UTF-8 text \(byte 0xe9 on line 3\); re-save it as UTF-8"):
        data.load_karpathy(tmp_path / "latin1.json")
    (tmp_path / "utf8.json").write_bytes(text.encode("utf-8"))
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))  # "UTF-8" from some Windows editors
    for name in ("utf8.json", "bom.json"):
        assert data.load_karpathy(tmp_path / name)[0].path[0] == "imgs/café.png"
    ann = tmp_path / "annotations"
    ann.mkdir()
    (ann / "f_train.json").write_bytes(b'[{"image": "a.png", "caption": "caf\xe9"}]')
    (ann / "f_val.json").write_text("[]")
    (ann / "f_test.json").write_text("[]")
    with pytest.raises(ValueError, match=r"f_train\.json is not UTF-8 text"):
        data.load_blip(ann, "f")


@pytest.mark.parametrize("splits, missing", [
    (["train", "val"], "'test'"),
    (["train", "test"], "'val'"),
    (["train"], "'val' or 'test'"),
    (["val", "test"], "'train' \\(or 'restval'\\)"),
], ids=["no-test", "no-val", "train-only", "no-train"])
def test_karpathy_split_missing_is_named(tmp_path, splits, missing):
    ann = karpathy(tmp_path, [kp_entry(f"{s}.png", s, ["x"]) for s in splits])
    with pytest.raises(ValueError, match=rf"dataset_toy\.json has no image whose 'split' is {missing}; the evaluate "
                                         r"stage needs train, val and test images"):
        data.load_karpathy(ann)


def test_karpathy_restval_counts_as_train(tmp_path):
    ann = karpathy(tmp_path, [kp_entry("r.png", "restval", ["x"]), kp_entry("v.png", "val", ["y"]),
                              kp_entry("t.png", "test", ["z"])])
    assert data.load_karpathy(ann)[0].split.tolist() == ["train", "val", "test"]


def test_blip_split_missing_is_named(tmp_path):
    ann = tmp_path / "annotations"
    ann.mkdir()
    (ann / "f_train.json").write_text(json.dumps([{"image": "a.png", "caption": "x"}]))
    (ann / "f_val.json").write_text("[]")
    (ann / "f_test.json").write_text(json.dumps([{"image": "c.png", "caption": ["z"]}]))
    with pytest.raises(ValueError, match=r"annotations/f_val\.json list no images; the evaluate stage needs train, "
                                         r"val and test images: add the val images there\."):
        data.load_dataset(tmp_path, "blip", "f")
    (ann / "f_test.json").write_text("[]")
    with pytest.raises(ValueError, match=r"f_val\.json, .*/f_test\.json list no images.*add the val and test images"):
        data.load_blip(ann, "f")


def test_blip_bad_entries(tmp_path):
    ann = tmp_path / "annotations"
    ann.mkdir()
    (ann / "f_train.json").write_text(json.dumps([{"image": "a.png", "caption": ["not", "a string"]}]))
    (ann / "f_val.json").write_text("[]")
    (ann / "f_test.json").write_text("[]")
    with pytest.raises(ValueError, match="one caption string"):
        data.load_blip(ann, "f")
    (ann / "f_train.json").write_text(json.dumps([{"image": "a.png"}]))
    with pytest.raises(ValueError, match="entry 0 lacks"):
        data.load_blip(ann, "f")


def test_image_paths_stay_inside_root(tmp_path):
    write_png(tmp_path / "root" / "imgs" / "a.png")
    assert data.resolve_image_path(tmp_path / "root", "imgs/a.png").name == "a.png"
    for bad in ["../outside.png", "/etc/passwd", "imgs/../../x.png", ""]:
        with pytest.raises(ValueError, match="dataset root|non-empty"):
            data.resolve_image_path(tmp_path / "root", bad)
    (tmp_path / "outside.png").write_bytes(b"")
    (tmp_path / "root" / "link.png").symlink_to(tmp_path / "outside.png")
    with pytest.raises(ValueError, match="escapes"):
        data.resolve_image_path(tmp_path / "root", "link.png")
    (tmp_path / "elsewhere").mkdir()
    write_png(tmp_path / "elsewhere" / "b.png")
    (tmp_path / "root" / "dirlink").symlink_to(tmp_path / "elsewhere")  # a folder link out of the root
    with pytest.raises(ValueError, match="escapes"):
        data.resolve_image_path(tmp_path / "root", "dirlink/b.png")
    (tmp_path / "root" / "inside").symlink_to(tmp_path / "root" / "imgs")  # a link that stays inside is fine
    assert data.resolve_image_path(tmp_path / "root", "inside/a.png") == (tmp_path / "root" / "imgs" / "a.png").resolve()


def test_missing_and_corrupt_images_are_named(tmp_path):
    write_png(tmp_path / "ok.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG not really")
    assert data.load_image(tmp_path, "ok.png").size == (8, 8)
    with pytest.raises(FileNotFoundError, match="gone.png"):
        data.load_image(tmp_path, "gone.png")
    with pytest.raises(ValueError, match="corrupt.png.*corrupt"):
        data.load_image(tmp_path, "corrupt.png")
    images = pd.DataFrame({"image_id": [0, 1, 2], "path": ["ok.png", "gone.png", "corrupt.png"],
                           "split": ["train"] * 3})
    report = data.validate_images(images, tmp_path)
    assert report.image_id.tolist() == [1, 2]


def test_atomic_writers_roundtrip_and_leave_no_temp_files(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    data.save_npy(tmp_path / "a" / "x.npy", x)
    np.testing.assert_array_equal(data.load_npy(tmp_path / "a" / "x.npy"), x)
    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    data.save_table(tmp_path / "t.parquet", df)
    pd.testing.assert_frame_equal(data.load_table(tmp_path / "t.parquet"), df)
    data.save_json(tmp_path / "m.json", {"k": [1, 2]})
    assert data.load_json(tmp_path / "m.json") == {"k": [1, 2]}
    with pytest.raises(ValueError):
        data.save_json(tmp_path / "m.json", {"k": float("nan")})  # NaN is refused; the old file survives
    assert data.load_json(tmp_path / "m.json") == {"k": [1, 2]}
    assert not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(FileNotFoundError, match="dvc repro"):
        data.load_npy(tmp_path / "missing.npy")


def test_same_array_same_bytes(tmp_path):
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    data.save_npy(tmp_path / "1.npy", x)
    data.save_npy(tmp_path / "2.npy", x)
    assert (tmp_path / "1.npy").read_bytes() == (tmp_path / "2.npy").read_bytes()
    img = Image.new("RGB", (4, 4), (1, 2, 3))
    data.save_png(tmp_path / "1.png", img)
    data.save_png(tmp_path / "2.png", img)
    assert (tmp_path / "1.png").read_bytes() == (tmp_path / "2.png").read_bytes()


def test_karpathy_flickr30k_images_are_found_in_flickr30k_images(tmp_path):
    """Karpathy's dataset_flickr30k.json has no 'filepath': the JPEGs are looked up in flickr30k-images/."""
    from PIL import Image

    (tmp_path / "flickr30k-images").mkdir()
    entries = []
    for i, split in enumerate(["train", "val", "test"]):
        Image.new("RGB", (4, 4)).save(tmp_path / "flickr30k-images" / f"{i}.jpg")
        entries.append({"filename": f"{i}.jpg", "split": split, "sentences": [{"raw": "a dog"}]})
    (tmp_path / "dataset_flickr30k.json").write_text(json.dumps({"dataset": "flickr30k", "images": entries}))
    images, _ = data.load_karpathy(tmp_path / "dataset_flickr30k.json")
    assert images["path"].tolist() == [f"flickr30k-images/{i}.jpg" for i in range(3)]
    assert data.load_image(tmp_path, images["path"][0]).size == (4, 4)


# ----------------------------------------------------------------------------------------------------
# image modes: each against a conversion computed by hand


def _load_saved(tmp_path, im: Image.Image, name: str = "x.png", **save) -> np.ndarray:
    im.save(tmp_path / name, **save)
    out = data.load_image(tmp_path, name)
    assert out.mode == "RGB"
    return np.asarray(out)


def test_rgb_images_load_byte_identically_to_pil_convert(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(_load_saved(tmp_path, Image.fromarray(pixels, "RGB")), pixels)
    pixels_jpeg = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels_jpeg).save(tmp_path / "y.jpg", quality=90)
    with Image.open(tmp_path / "y.jpg") as im:
        want = np.asarray(im.convert("RGB"))  # what the loader returned before modes were handled
    np.testing.assert_array_equal(np.asarray(data.load_image(tmp_path, "y.jpg")), want)


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 128, 257, 25700, 32896, 65535]], dtype=np.uint16)  # 16-bit grey levels
    got = _load_saved(tmp_path, Image.fromarray(values))  # PNG keeps 16 bits: opens as I;16 (or I)
    want = np.floor(values / 257 + 0.5).astype(np.uint8)  # 0, 0, 1, 100, 128, 255
    np.testing.assert_array_equal(got, np.repeat(want[..., None], 3, axis=2))
    assert data.to_rgb(Image.fromarray(values.astype(np.int32), "I")).getpixel((3, 0)) == (100, 100, 100)
    with pytest.raises(ValueError, match=r"big.png.*values in \[0, 70000\]"):
        data.to_rgb(Image.fromarray(np.array([[0, 70000]], np.int32), "I"), "image big.png")


def test_greyscale_and_bilevel(tmp_path):
    grey = np.array([[0, 17, 200, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(_load_saved(tmp_path, Image.fromarray(grey, "L")), np.repeat(grey[..., None], 3, 2))
    bits = Image.fromarray(np.array([[0, 255, 0]], dtype=np.uint8)).convert("1")
    np.testing.assert_array_equal(_load_saved(tmp_path, bits, "b.png")[0, :, 0], [0, 255, 0])


def test_palette_with_and_without_transparency(tmp_path):
    im = Image.new("P", (3, 1))
    im.putpalette([10, 20, 30, 200, 100, 50, 0, 0, 0] + [0] * (256 * 3 - 9))
    im.putdata([0, 1, 2])
    np.testing.assert_array_equal(_load_saved(tmp_path, im)[0], [[10, 20, 30], [200, 100, 50], [0, 0, 0]])
    # index 2 transparent: shown over white, as a viewer shows it, not as its hidden palette colour
    np.testing.assert_array_equal(_load_saved(tmp_path, im, "t.png", transparency=2)[0],
                                  [[10, 20, 30], [200, 100, 50], [255, 255, 255]])


def test_alpha_is_composited_over_white(tmp_path):
    rgba = np.array([[[200, 100, 0, 255], [200, 100, 0, 0], [200, 100, 0, 128]]], dtype=np.uint8)
    a = rgba[..., 3:].astype(np.float64) / 255
    want = np.round(rgba[..., :3] * a + 255 * (1 - a))  # alpha-over onto white
    got = _load_saved(tmp_path, Image.fromarray(rgba, "RGBA"))
    assert np.abs(got.astype(int) - want).max() <= 1  # PIL's integer compositing rounds within one level
    np.testing.assert_array_equal(got[0, :2], [[200, 100, 0], [255, 255, 255]])
    la = np.array([[[60, 255], [60, 0]]], dtype=np.uint8)
    np.testing.assert_array_equal(_load_saved(tmp_path, Image.fromarray(la, "LA"), "la.png")[0],
                                  [[60, 60, 60], [255, 255, 255]])


def test_cmyk_uses_the_subtractive_formula(tmp_path):
    cmyk = np.array([[[10, 20, 30, 40], [0, 0, 0, 0], [255, 0, 0, 0]]], dtype=np.uint8)
    got = _load_saved(tmp_path, Image.fromarray(cmyk, "CMYK"), "c.tif")
    c, k = cmyk[..., :3].astype(np.float64), cmyk[..., 3:].astype(np.float64)
    want = np.round((255 - c) * (255 - k) / 255)
    np.testing.assert_array_equal(got, want)


def test_modes_without_an_rgb_conversion_are_refused_by_name(tmp_path):
    Image.fromarray(np.zeros((2, 2), np.float32), "F").save(tmp_path / "f.tif")
    with pytest.raises(ValueError, match=r"image .*f.tif has image mode 'F'.*save it as 8-bit"):
        data.load_image(tmp_path, "f.tif")
