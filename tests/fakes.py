"""Tiny fabricated inputs for tests: a Karpathy-format image dataset of coloured 32x32 PNGs and a matching
data/embeddings/ folder, so a stage can be tested without running the stages before it.

    from fakes import make_fake_dataset, make_fake_embeddings   # tests/ is on sys.path under pytest
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pds import artifacts, data

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40),
           "purple": (150, 60, 190), "orange": (240, 140, 30), "grey": (128, 128, 128), "cyan": (40, 200, 210)}


def fake_split(n_images: int) -> list[str]:
    """60 / 20 / 20 train / val / test, interleaved so every split sees every group."""
    return [("train", "train", "train", "val", "test")[i % 5] for i in range(n_images)]


def make_fake_dataset(root, n_images: int = 40, captions_per_image: int = 5, n_groups: int = 4,
                      image_size: int = 32, seed: int = 0):
    """Write `root/dataset_<root name>.json` (Karpathy format) and `root/images/NNNNN.png`.

    Image i belongs to group i % n_groups (a colour) and shows a square of that colour at a random place;
    its captions name the colour. Returns (images, captions) as `pds.data.load_dataset` reads them back.
    """
    root = Path(root)
    if not 1 <= n_groups <= len(COLOURS):
        raise ValueError(f"n_groups must be in [1, {len(COLOURS)}].")
    rng = np.random.default_rng(seed)
    names = list(COLOURS)[:n_groups]
    entries, sentid = [], 0
    for i, split in enumerate(fake_split(n_images)):
        colour = names[i % n_groups]
        pixels = np.full((image_size, image_size, 3), 235, dtype=np.uint8)
        x, y = rng.integers(0, image_size // 2, 2)
        pixels[y:y + image_size // 2, x:x + image_size // 2] = COLOURS[colour]
        data.save_png(root / "images" / f"{i:05d}.png", Image.fromarray(pixels))
        sentences = []
        for k in range(captions_per_image):
            raw = f"A {colour} square, picture {i} caption {k}."
            sentences.append({"raw": raw, "tokens": raw.lower().strip(".").split(), "sentid": sentid, "imgid": i})
            sentid += 1
        entries.append({"imgid": i, "filename": f"{i:05d}.png", "filepath": "images", "split": split,
                        "sentences": sentences, "sentids": [s["sentid"] for s in sentences],
                        "attributes": {"colour": colour}})
    ann = root / f"dataset_{root.name}.json"
    ann.write_text(json.dumps({"dataset": root.name, "images": entries}))
    return data.load_dataset(root)


def fake_tables(n_images: int = 40, captions_per_image: int = 5):
    """The images / captions tables of `make_fake_dataset` without writing any file."""
    split = fake_split(n_images)
    images = pd.DataFrame({"image_id": np.arange(n_images, dtype=np.int64),
                           "path": [f"images/{i:05d}.png" for i in range(n_images)], "split": split})
    image_id = np.repeat(np.arange(n_images, dtype=np.int64), captions_per_image)
    captions = pd.DataFrame({"caption_id": np.arange(len(image_id), dtype=np.int64), "image_id": image_id,
                             "split": [split[i] for i in image_id],
                             "caption": [f"picture {i} caption {k}" for i in range(n_images)
                                         for k in range(captions_per_image)]})
    return images, captions


def make_fake_embeddings(out_dir, images: pd.DataFrame | None = None, captions: pd.DataFrame | None = None,
                         d: int = 16, n_groups: int = 4, noise: float = 0.3, seed: int = 0):
    """Write image.npy, text.npy, images.parquet, captions.parquet like the embed stage does.

    Gaussian blobs: image i and its captions sit near the centre of group image_id % n_groups (text with an
    offset, like CLIP's modality gap), so clusters and matches are known. Without tables, uses
    `fake_tables()`. Returns (image (n_images, d), text (n_captions, d)) float32, unnormalised.
    """
    if images is None or captions is None:
        images, captions = fake_tables()
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_groups, d)) * 3  # (G, d)
    gap = rng.normal(size=d)  # (d,) shared offset of every text embedding
    group = images["image_id"].to_numpy() % n_groups  # (n_images,)
    image = centres[group] + noise * rng.normal(size=(len(images), d))
    text = centres[group[captions["image_id"].to_numpy()]] + gap + noise * rng.normal(size=(len(captions), d))
    out = Path(out_dir)
    data.save_npy(out / "image.npy", image.astype(np.float32))
    data.save_npy(out / "text.npy", text.astype(np.float32))
    data.save_table(out / "images.parquet", images)
    data.save_table(out / "captions.parquet", captions)
    artifacts.write_manifest(out, "embed", ["image.npy", "text.npy", "images.parquet", "captions.parquet"])
    return image.astype(np.float32), text.astype(np.float32)


def tiny_evaluation_data(rng, n: int = 20, image_size: int = 32, d_text: int = 6):
    """A 20-image EvaluationData (12 train / 4 val / 4 test, 2 captions each) of random pixels and caption
    features; synthetic = the first 3 train images with the first 3 caption features. Returns (ev, features)."""
    import torch

    from pds import evaluate

    images = pd.DataFrame({"image_id": np.arange(n), "path": [f"{i}.png" for i in range(n)],
                           "split": ["train"] * 12 + ["val"] * 4 + ["test"] * 4})
    image_id = np.repeat(np.arange(n), 2)
    captions = pd.DataFrame({"caption_id": np.arange(2 * n), "image_id": image_id,
                             "split": images.split.to_numpy()[image_id], "caption": [f"c{k}" for k in range(2 * n)]})
    feats = rng.normal(size=(2 * n, d_text)).astype(np.float32)
    pixels = torch.from_numpy(rng.integers(0, 256, (n, 3, image_size, image_size)).astype(np.uint8))
    ev = evaluate.EvaluationData(
        train_images=pixels[:12], train_row=pd.Series(np.arange(12), index=np.arange(12)),
        val=evaluate.retrieval_set(images, captions, feats, "val", pixels[12:16]),
        test=evaluate.retrieval_set(images, captions, feats, "test", pixels[16:]),
        synthetic=pixels[:3], pds_text=feats[:3], pds_real=np.array([0, 5, 7]), text_features=feats, captions=captions)
    return ev, feats


def bn_encoder():
    """A tiny image encoder with BatchNorm (4x4 images -> 8 features), whose eval and train modes differ."""
    import torch
    from torch import nn

    from pds.models import ImageEncoder

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 8), nn.BatchNorm1d(8))
    return ImageEncoder(model, "tiny", 8, 4, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "")


def metrics_tree(rows, dataset="t", n_pairs=100, seeds=3) -> dict:
    """A metrics.json tree (pds.results) from flat rows {method, image_encoder, r_mean[, protocol, sd, n]}: every
    recall equal to r_mean, the test-selected figures one point higher."""
    from pds.contrastive import METRICS

    tree = {"dataset": dataset, "n_pairs": n_pairs, "seeds": seeds}
    for r in rows:
        figures = {"sd": r.get("sd", 0.5), "n": r.get("n", seeds)}
        entry = {**dict.fromkeys(METRICS, r["r_mean"]), **figures, "epochs": 100,
                 "test_selected": {**dict.fromkeys(METRICS, r["r_mean"] + 1), **figures}}
        tree.setdefault(r.get("protocol", "field"), {}).setdefault(r["method"], {})[r["image_encoder"]] = entry
    return tree
