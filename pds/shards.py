"""Embeddings as shards in clip-retrieval's layout, the interface past one machine (docs/scale.md):

    <root>/img_emb/img_emb_<i>.npy      (rows, d) image embedding of each pair
    <root>/text_emb/text_emb_<i>.npy    (rows, d) caption embedding of each pair
    <root>/metadata/metadata_<i>.parquet  one row per pair (caption_id, image_id, caption, ...)
    <root>/manifest.json                shard names, row counts, dtype, dimension and sha256 (DVC tracks this)

A row is one training *pair* (a caption with its image's embedding), as clip-retrieval writes them; the
project's own embeddings (image.npy one row per image, text.npy one row per caption) convert both ways.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pds import data

MANIFEST = "manifest.json"
DTYPES = ("float16", "float32")
META_COLUMNS = ("caption_id", "image_id")  # what the passes need; other metadata columns are carried along


def shard_paths(root, i: int) -> dict[str, Path]:
    root = Path(root)
    return {"img_emb": root / "img_emb" / f"img_emb_{i}.npy", "text_emb": root / "text_emb" / f"text_emb_{i}.npy",
            "metadata": root / "metadata" / f"metadata_{i}.parquet"}


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def write_shards(root, image_pairs: np.ndarray, text_pairs: np.ndarray, metadata: pd.DataFrame,
                 shard_size: int = 100_000, dtype: str = "float16", normalize: bool = False) -> dict:
    """Write pairs (n, d), (n, d) and their metadata (n rows, with caption_id and image_id) as shards of
    `shard_size` rows, then the manifest (last, so a manifest names only complete shards). normalize=True
    writes unit-length rows, as clip-retrieval does. Returns the manifest."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}; use one of {DTYPES}.")
    if shard_size < 1:
        raise ValueError(f"shard_size={shard_size} must be >= 1.")
    n = len(image_pairs)
    if len(text_pairs) != n or len(metadata) != n:
        raise ValueError(f"image_pairs ({n}), text_pairs ({len(text_pairs)}) and metadata ({len(metadata)}) must "
                         "have one row per pair.")
    missing = [c for c in META_COLUMNS if c not in metadata.columns]
    if missing:
        raise ValueError(f"metadata lacks columns {missing}: the passes name pairs by caption_id and image_id.")
    root = Path(root)
    entries = []
    for i, start in enumerate(range(0, n, shard_size)):
        rows = slice(start, start + shard_size)
        paths = shard_paths(root, i)
        for key, x in (("img_emb", image_pairs[rows]), ("text_emb", text_pairs[rows])):
            x = np.asarray(x, dtype=np.float32)
            if normalize:
                x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            data.save_npy(paths[key], x.astype(dtype))
        data.save_table(paths["metadata"], metadata.iloc[rows].reset_index(drop=True))
        entries.append(_entry(root, i, paths, len(metadata.iloc[rows])))
    manifest = {"format": "clip-retrieval", "dim": int(np.shape(image_pairs)[1]), "dtype": dtype,
                "normalized": bool(normalize), "rows": int(n), "shards": entries}
    data.save_json(root / MANIFEST, manifest)
    return manifest


def _entry(root: Path, i: int, paths: dict, rows: int) -> dict:
    return {"index": i, "rows": int(rows),
            **{key: {"name": str(p.relative_to(root)), "sha256": sha256(p)} for key, p in paths.items()}}


def make_manifest(root) -> dict:
    """Manifest for shards written elsewhere (e.g. by clip-retrieval): scan img_emb/, check every shard and
    hash it. Writes <root>/manifest.json and returns it."""
    root = Path(root)
    found = sorted(int(p.stem.rsplit("_", 1)[1]) for p in (root / "img_emb").glob("img_emb_*.npy"))
    if not found:
        raise FileNotFoundError(f"{root / 'img_emb'} holds no img_emb_<i>.npy shards.")
    if found != list(range(len(found))):
        gap = next(i for i in range(len(found) + 1) if i not in found)
        raise FileNotFoundError(f"shard {gap} is missing: {shard_paths(root, gap)['img_emb']} (shards must be "
                                "numbered 0..n-1).")
    first = _open_npy(shard_paths(root, 0)["img_emb"])
    manifest = {"format": "clip-retrieval", "dim": int(first.shape[1]), "dtype": str(first.dtype),
                "normalized": None, "rows": 0, "shards": []}
    for i in found:
        paths = shard_paths(root, i)
        rows = len(_check_shard(root, manifest, i, paths, None)[2])
        manifest["shards"].append(_entry(root, i, paths, rows))
        manifest["rows"] += rows
    data.save_json(root / MANIFEST, manifest)
    return manifest


def _open_npy(path: Path) -> np.ndarray:
    if not path.exists():
        raise FileNotFoundError(f"shard file {path} is missing; re-write the shards or fix the manifest.")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:  # numpy says "mmap length is greater than file size" for a cut-off file
        raise ValueError(f"shard file {path} is truncated or not a .npy file ({e}); re-write this shard.") from None


def _check_shard(root: Path, manifest: dict, i: int, paths: dict, rows: int | None):
    img, txt = _open_npy(paths["img_emb"]), _open_npy(paths["text_emb"])
    for x, p in ((img, paths["img_emb"]), (txt, paths["text_emb"])):
        if x.ndim != 2 or x.shape[1] != manifest["dim"]:
            raise ValueError(f"shard file {p} has shape {x.shape}, expected (rows, {manifest['dim']}); all shards "
                             "must come from one CLIP.")
        if str(x.dtype) != manifest["dtype"]:
            raise ValueError(f"shard file {p} is {x.dtype}, expected {manifest['dtype']}; write every shard with "
                             "one dtype.")
    if not paths["metadata"].exists():
        raise FileNotFoundError(f"shard file {paths['metadata']} is missing; re-write the shards.")
    meta = pd.read_parquet(paths["metadata"])
    missing = [c for c in META_COLUMNS if c not in meta.columns]
    if missing:
        raise ValueError(f"shard file {paths['metadata']} lacks the integer columns {missing}: add caption_id (one "
                         "per pair) and image_id (one per distinct image) to every metadata shard.")
    if not len(img) == len(txt) == len(meta):
        raise ValueError(f"shard {i} disagrees on its rows: {paths['img_emb'].name} {len(img)}, "
                         f"{paths['text_emb'].name} {len(txt)}, {paths['metadata'].name} {len(meta)}; "
                         "re-write this shard.")
    if rows is not None and len(img) != rows:
        raise ValueError(f"shard {i} ({paths['img_emb']}) has {len(img)} rows but {MANIFEST} says {rows}; "
                         "re-write the shard or the manifest.")
    return img, txt, meta


@dataclass
class Shards:
    """A set of shards checked against its manifest. `offsets[i]` is the global row of shard i's first pair."""

    root: Path
    manifest: dict

    @property
    def n_shards(self) -> int:
        return len(self.manifest["shards"])

    @property
    def rows(self) -> np.ndarray:
        return np.array([s["rows"] for s in self.manifest["shards"]], dtype=np.int64)  # (n_shards,)

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.rows)])  # (n_shards + 1,)

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    def read(self, i: int, verify: bool = False) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
        """Shard i as (image (rows, d), text (rows, d) memory-mapped, metadata), every check applied; verify=True
        also compares the files' sha256 with the manifest."""
        entry = self.manifest["shards"][i]
        paths = {key: self.root / entry[key]["name"] for key in ("img_emb", "text_emb", "metadata")}
        if verify:
            for key, p in paths.items():
                if p.exists() and sha256(p) != entry[key]["sha256"]:
                    raise ValueError(f"shard file {p} does not match its sha256 in {MANIFEST}; it changed after "
                                     "the manifest was written: re-write the shard or run make_manifest.")
        return _check_shard(self.root, self.manifest, i, paths, entry["rows"])


def open_shards(root, verify: bool = False) -> Shards:
    """Read <root>/manifest.json and check every shard (files present, rows, dtype, dimension; with verify,
    their sha256). Raises one-line errors naming the bad shard."""
    root = Path(root)
    path = root / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: write shards with pds.shards.write_shards, or for shards "
                                "written elsewhere create it with pds.shards.make_manifest.")
    manifest = json.loads(path.read_text())
    if manifest.get("dtype") not in DTYPES:
        raise ValueError(f"{path}: dtype {manifest.get('dtype')!r} is not one of {DTYPES}.")
    shards = Shards(root, manifest)
    for i, entry in enumerate(manifest["shards"]):
        if entry["index"] != i:
            raise ValueError(f"{path}: shard entry {i} has index {entry['index']}; shards must be listed in order.")
        shards.read(i, verify=verify)
    return shards


# ----------------------------------------------------------------------------------------------------
# conversion from / to the project's embeddings (data/embeddings/)


def from_embeddings(emb_dir, root, split: str = "train", shard_size: int = 100_000, dtype: str = "float16",
                    normalize: bool = False) -> dict:
    """Shards of one split's pairs from the embed stage's output: pair k = (image of caption k, caption k),
    in caption-table order (the order pds.cluster.train_pairs uses). Metadata: caption_id, image_id, caption,
    split and the image's path (img2dataset's `url` role)."""
    from pds import embed

    emb = embed.load_embeddings(emb_dir)
    caps = emb.captions[emb.captions["split"] == split]
    if caps.empty:
        raise ValueError(f"{emb_dir} has no {split!r}-split captions.")
    meta = pd.DataFrame({"caption_id": caps["caption_id"].to_numpy(np.int64),
                         "image_id": caps["image_id"].to_numpy(np.int64),
                         "caption": caps["caption"].to_numpy(), "split": caps["split"].to_numpy(),
                         "path": emb.images.set_index("image_id").loc[caps["image_id"], "path"].to_numpy()})
    image_pairs, text_pairs, _ = emb.pairs(split)
    return write_shards(root, image_pairs, text_pairs, meta, shard_size, dtype, normalize)


def read_pairs(shards: Shards) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """All shards in memory as (image_pairs (n, d) float32, text_pairs (n, d) float32, metadata): for sizes
    where the in-memory stages still run (comparisons, the lessons)."""
    parts = [shards.read(i) for i in range(shards.n_shards)]
    return (np.concatenate([np.asarray(p[0], np.float32) for p in parts]),
            np.concatenate([np.asarray(p[1], np.float32) for p in parts]),
            pd.concat([p[2] for p in parts], ignore_index=True))


def to_embeddings(shards: Shards) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Back to the project's one-row-per-image form: (image (n_images, d) indexed by image_id, text (n, d)
    indexed by caption_id, captions table). Ids must be contiguous 0..max; an image's rows in several pairs
    must agree (they do when the shards came from from_embeddings; repeated rows of one image in
    clip-retrieval's output differ only if the images were re-encoded)."""
    image_pairs, text_pairs, meta = read_pairs(shards)
    cap, img = meta["caption_id"].to_numpy(np.int64), meta["image_id"].to_numpy(np.int64)
    if not np.array_equal(np.sort(cap), np.arange(len(cap))):
        raise ValueError(f"{shards.root}: caption_id must be 0..n-1 once each to index text rows.")
    n_images = int(img.max()) + 1
    if not np.array_equal(np.unique(img), np.arange(n_images)):
        raise ValueError(f"{shards.root}: image_id must cover 0..{n_images - 1} to index image rows.")
    image = np.zeros((n_images, shards.dim), np.float32)
    image[img] = image_pairs
    if not np.array_equal(image[img], image_pairs):
        raise ValueError(f"{shards.root}: pairs of one image_id carry different image embeddings.")
    text = np.zeros_like(text_pairs)
    text[cap] = text_pairs
    captions = meta.sort_values("caption_id", kind="stable").reset_index(drop=True)
    return image, text, captions


def main(argv=None) -> None:
    """python -m pds.shards manifest ROOT  |  python -m pds.shards from-embeddings EMB_DIR ROOT [--shard-size N
    --dtype float16|float32 --normalize]: write the manifest of shards written elsewhere, or shards of the embed
    stage's training pairs."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("manifest")
    m.add_argument("root")
    f = sub.add_parser("from-embeddings")
    f.add_argument("emb_dir")
    f.add_argument("root")
    f.add_argument("--shard-size", type=int, default=100_000)
    f.add_argument("--dtype", default="float16", choices=DTYPES)
    f.add_argument("--normalize", action="store_true", help="unit-length rows, as clip-retrieval writes them")
    opts = p.parse_args(argv)
    if opts.command == "manifest":
        manifest = make_manifest(opts.root)
    else:
        manifest = from_embeddings(opts.emb_dir, opts.root, shard_size=opts.shard_size, dtype=opts.dtype,
                                   normalize=opts.normalize)
    print(f"{Path(opts.root) / MANIFEST}: {len(manifest['shards'])} shards, {manifest['rows']:,} pairs, "
          f"{manifest['dim']}-d {manifest['dtype']}")


if __name__ == "__main__":
    main()
