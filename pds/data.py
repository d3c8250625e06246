"""Dataset loaders (Karpathy and BLIP annotation formats) and artefact I/O shared by every stage.

Tables: images (image_id, path, split) and captions (caption_id, image_id, split, caption). `image_id` and
`caption_id` are contiguous row numbers, so they index the rows of image.npy / text.npy directly; `path`
is relative to the dataset root. Every write is atomic (temp file + rename), so an interrupted stage never
leaves a half-written file behind that looks complete.
"""

import functools
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

SPLITS = ("train", "val", "test")
IMAGE_COLUMNS = ["image_id", "path", "split"]
CAPTION_COLUMNS = ["caption_id", "image_id", "split", "caption"]

# ----------------------------------------------------------------------------------------------------
# atomic artefact I/O


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)`, then rename tmp_path onto `path`: readers see the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp creates owner-only files; artefacts are ordinary readable files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_npy(path, array: np.ndarray) -> Path:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)

    return atomic_write(path, write)


def _rerun(path) -> str:
    from pds import artifacts  # imported here: artifacts writes through this module

    return artifacts.hint_for_path(path)


def load_npy(path) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run {_rerun(path)} first.")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:  # numpy's messages (truncated, not .npy) name no file
        raise ValueError(f"{path} is unreadable or truncated ({type(e).__name__}: {e}); rerun {_rerun(path)}.") from e


def save_table(path, df: pd.DataFrame) -> Path:
    # parquet keeps dtypes; the file is written without pandas' index so bytes depend only on the data
    return atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False, compression="zstd"))


def load_table(path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run {_rerun(path)} first.")
    try:
        return pd.read_parquet(path)
    except Exception as e:  # pyarrow raises its own types (ArrowInvalid, ...) that name no file
        raise ValueError(f"{path} is not a readable parquet table ({type(e).__name__}: {e}); rerun "
                         f"{_rerun(path)}.") from e


def save_json(path, obj, indent: int | None = 2) -> Path:
    text = json.dumps(obj, indent=indent, sort_keys=False, allow_nan=False) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def load_json(path):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run {_rerun(path)} first.")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); rerun {_rerun(path)}.") from None


def save_png(path, image: Image.Image) -> Path:
    # PNG without timestamps or other metadata: same pixels => same bytes
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG", optimize=False))


# ----------------------------------------------------------------------------------------------------
# captions


def preprocess_caption(caption: str, max_words: int = 30) -> str:
    """The field's caption cleaning (BLIP `pre_caption`): lower-case, punctuation to spaces, collapse
    spaces, keep at most `max_words` words."""
    caption = re.sub(r"([.!\"()*#:;~,?'`])", " ", caption.lower())
    caption = re.sub(r"\s{2,}", " ", caption).strip()
    words = caption.split(" ")
    return " ".join(words[:max_words]) if max_words else caption


# ----------------------------------------------------------------------------------------------------
# paths inside the dataset root


@functools.lru_cache(maxsize=4096)
def _real_dir(root: str, rel_dir: str) -> tuple[Path, Path]:
    """(resolved root, resolved root/rel_dir): cached, since thousands of images share a folder and a full
    `resolve` per image costs as much as decoding a small PNG."""
    real_root = Path(root).resolve()
    return real_root, (real_root / rel_dir).resolve()


def resolve_image_path(root: str | os.PathLike, rel: str) -> Path:
    """`root / rel`, refusing any path that leaves the dataset root (absolute paths, `..`, symlinks out)."""
    if not rel or Path(rel).is_absolute():
        raise ValueError(f"image path {rel!r} must be a non-empty path relative to the dataset root "
                         f"{Path(root).resolve()}.")
    rel_dir, name = os.path.split(rel)
    real_root, folder = _real_dir(os.path.abspath(root), rel_dir)
    full = folder / name
    if name in ("", ".", "..") or os.path.islink(full):  # only then can the last part move the path
        full = full.resolve()
    if full != real_root and real_root not in full.parents:
        raise ValueError(f"image path {rel!r} escapes the dataset root {real_root}; fix the annotation file.")
    return full


# modes PIL converts to RGB exactly as intended; others are handled in `to_rgb` or refused by name
_DIRECT_MODES = ("RGB", "L", "1", "CMYK", "YCbCr", "RGBX")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def to_rgb(im: Image.Image, name: str = "image") -> Image.Image:
    """An image of any common mode as 8-bit RGB.

    RGB is returned as PIL converts it (pixels unchanged, as before this function existed); L / 1 / CMYK / YCbCr by PIL's conversion (CMYK:
    (255 - c)(255 - k) / 255); palette images through their palette; images with transparency (RGBA, LA,
    PA, a palette's transparent index) are composited over white, as a viewer shows them, rather than having
    the colour under transparent pixels revealed; 16-bit greyscale (I;16*, or I with values in 0..65535) is
    scaled by 1/257 (rounded), where PIL's own conversion would clip it to white. Other modes (32-bit float,
    LAB, ...) are refused with `name` in the message.
    """
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    elif mode == "L" and "transparency" in im.info:  # a grey level marked transparent (PNG tRNS)
        im, mode = im.convert("RGBA"), "RGBA"
    if mode in _DIRECT_MODES:
        return im.convert("RGB")
    if mode in _ALPHA_MODES:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        x = np.asarray(im).astype(np.int64)  # (H, W)
        if x.size and (x.min() < 0 or x.max() > 65535):
            raise ValueError(f"{name} is a 32-bit integer image with values in [{x.min()}, {x.max()}]; expected "
                             "16-bit values (0..65535): save it as 8- or 16-bit PNG.")
        grey = ((x * 2 + 257) // 514).astype(np.uint8)  # round(x / 257): 65535 -> 255, 0 -> 0
        return Image.fromarray(grey, "L").convert("RGB")
    raise ValueError(f"{name} has image mode {mode!r}, which is not converted to RGB here; save it as 8-bit RGB, "
                     "greyscale or palette PNG/JPEG.")


def load_image(root, rel: str) -> Image.Image:
    """Open one image as 8-bit RGB (`to_rgb`), with an error that names the file when it is missing, corrupt
    or of a mode that cannot be converted."""
    path = resolve_image_path(root, rel)
    try:
        with Image.open(path) as im:
            im.load()  # decode now, while the file is open; the conversion below reads the pixels in memory
    except FileNotFoundError:
        raise FileNotFoundError(f"image {path} is listed in the annotations but missing on disk.") from None
    except Exception as e:  # PIL raises several types for truncated / non-image files
        raise ValueError(f"image {path} is unreadable or corrupt ({type(e).__name__}: {e}).") from e
    return to_rgb(im, f"image {path}")


def validate_images(images: pd.DataFrame, root) -> pd.DataFrame:
    """Open every image once; returns a report (image_id, path, error) of the bad ones (empty if all ok)."""
    bad = []
    for row in images.itertuples(index=False):
        try:
            im = load_image(root, row.path)
            im.load()
        except (FileNotFoundError, ValueError) as e:
            bad.append((row.image_id, row.path, str(e)))
    return pd.DataFrame(bad, columns=["image_id", "path", "error"])


# ----------------------------------------------------------------------------------------------------
# annotation formats


def _tables(entries: list[tuple[str, str, list[str]]], source: str, preprocess: bool, max_words: int):
    """Build the two tables from (path, split, captions) triples, checking ids, splits and captions."""
    images, captions, seen = [], [], {}
    for n, (path, split, caps) in enumerate(entries):
        where = f"{source}: image entry {n} ({path!r})"
        if split not in SPLITS:
            raise ValueError(f"{where} has split {split!r}; expected one of {SPLITS}.")
        if path in seen:
            raise ValueError(f"{where} duplicates entry {seen[path]}: each image must appear once.")
        seen[path] = n
        if not caps:
            raise ValueError(f"{where} has no captions.")
        image_id = len(images)
        images.append((image_id, path, split))
        for k, cap in enumerate(caps):
            if not isinstance(cap, str) or not cap.strip():
                raise ValueError(f"{where} caption {k} is empty; remove or fix it.")
            text = preprocess_caption(cap, max_words) if preprocess else cap.strip()
            if not text:
                raise ValueError(f"{where} caption {k} ({cap!r}) is empty after preprocessing.")
            captions.append((len(captions), image_id, split, text))
    img = pd.DataFrame(images, columns=IMAGE_COLUMNS)
    cap = pd.DataFrame(captions, columns=CAPTION_COLUMNS)
    return img.astype({"image_id": "int64"}), cap.astype({"caption_id": "int64", "image_id": "int64"})


def _read_json(path: Path):
    if not path.exists():
        raise FileNotFoundError(f"annotation file {path} not found; see the README section on real data.")
    raw = path.read_bytes()  # decoded whole, not by a text stream, so the error's offset is the file's
    try:
        # JSON is UTF-8 whatever the machine's locale says; the byte-order mark that some Windows editors
        # write when told to save as UTF-8 is dropped rather than refused
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ValueError(f"annotation file {path} is not UTF-8 text (byte {raw[e.start]:#04x} on line {line}); "
                         "re-save it as UTF-8, e.g. iconv -f <its encoding> -t utf-8.") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"annotation file {path} is not valid JSON ({e}).") from e


def _missing_splits(images: pd.DataFrame) -> list[str]:
    """The splits with no image. Every one is needed: the distillation and the coreset baselines draw from
    train, the evaluate stage selects on val and reports test; unchecked, a missing split fails only there."""
    present = set(images["split"])
    return [s for s in SPLITS if s not in present]


def load_karpathy(ann_file, preprocess: bool = True, max_words: int = 30):
    """Karpathy split file (dataset_flickr30k.json / dataset_coco.json / dataset_toyworld.json).

    Returns (images, captions). Karpathy's `restval` (COCO) counts as train, as in the field.
    """
    ann_file = Path(ann_file)
    data = _read_json(ann_file)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{ann_file} is not a Karpathy split file: expected an object with an 'images' list.")
    entries = []
    # Karpathy's Flickr30k file names no folder (only COCO's has 'filepath'); the JPEGs ship in
    # flickr30k-images/, the layout the BLIP files and the README use, so look there when it exists
    default_folder = "flickr30k-images" if (ann_file.parent / "flickr30k-images").is_dir() else ""
    for n, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "filename" not in im or "split" not in im or "sentences" not in im:
            raise ValueError(f"{ann_file}: image entry {n} lacks one of 'filename', 'split', 'sentences'.")
        folder = im.get("filepath") or default_folder
        path = str(Path(folder) / im["filename"]) if folder else im["filename"]
        split = "train" if im["split"] == "restval" else im["split"]
        try:
            caps = [s["raw"] for s in im["sentences"]]
        except (TypeError, KeyError) as e:
            raise ValueError(f"{ann_file}: image entry {n} has a sentence without 'raw'.") from e
        entries.append((path, split, caps))
    images, captions = _tables(entries, str(ann_file), preprocess, max_words)
    if missing := _missing_splits(images):
        names = " or ".join("'train' (or 'restval')" if s == "train" else repr(s) for s in missing)
        raise ValueError(f"{ann_file} has no image whose 'split' is {names}; the evaluate stage needs train, val "
                         "and test images: set the 'split' of some image entries to each missing split.")
    return images, captions


def load_blip(ann_dir, name: str, preprocess: bool = True, max_words: int = 30):
    """BLIP split files used by the multimodal distillation papers: `{name}_train.json` (one entry per
    caption: image, caption), `{name}_val.json` / `{name}_test.json` (one entry per image: image, caption
    list). `name` is e.g. `flickr30k` or `coco_karpathy`."""
    ann_dir = Path(ann_dir)
    entries, index = [], {}
    for split in SPLITS:
        f = ann_dir / f"{name}_{split}.json"
        data = _read_json(f)
        if not isinstance(data, list):
            raise ValueError(f"{f} must hold a list of entries.")
        for n, e in enumerate(data):
            if not isinstance(e, dict) or "image" not in e or "caption" not in e:
                raise ValueError(f"{f}: entry {n} lacks 'image' or 'caption'.")
            caps = [e["caption"]] if split == "train" else e["caption"]
            if split == "train" and not isinstance(e["caption"], str):
                raise ValueError(f"{f}: entry {n} must have one caption string (train files list one per entry).")
            if split != "train" and not isinstance(caps, list):
                raise ValueError(f"{f}: entry {n} must have a caption list ({split} files list one image per entry).")
            if split == "train" and e["image"] in index:
                entries[index[e["image"]]][2].extend(caps)  # train: several entries per image
                continue
            index[e["image"]] = len(entries)
            entries.append((e["image"], split, list(caps)))
    images, captions = _tables(entries, str(ann_dir / f"{name}_*.json"), preprocess, max_words)
    if missing := _missing_splits(images):
        files = ", ".join(str(ann_dir / f"{name}_{split}.json") for split in missing)
        raise ValueError(f"{files} list no images; the evaluate stage needs train, val and test images: add "
                         f"the {' and '.join(missing)} images there.")
    return images, captions


def load_dataset(root, ann_format: str = "karpathy", ann_file: str = "", preprocess: bool = True,
                 max_words: int = 30):
    """Read a dataset under `root`: `ann_format` is `karpathy` (ann_file inside root, default
    dataset_<root name>.json) or `blip` (ann_file = the BLIP prefix, e.g. flickr30k, files in root/annotations)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} not found; generate the toy world (dvc repro toyworld) "
                                "or point the dataset params at your copy of the data.")
    if ann_format == "karpathy":
        return load_karpathy(root / (ann_file or f"dataset_{root.name}.json"), preprocess, max_words)
    if ann_format == "blip":
        return load_blip(root / "annotations", ann_file or root.name, preprocess, max_words)
    raise ValueError(f"unknown annotation format {ann_format!r}; use 'karpathy' or 'blip'.")
