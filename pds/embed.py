"""Stage 01 (notebooks/01_embed.ipynb): encode every image and caption with a CLIP.

Embeddings are the projected CLIP features, unnormalised float32, as in the reference implementation.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from pds import artifacts, data


@dataclass
class Embeddings:
    image: np.ndarray  # (n_images, d) float32
    text: np.ndarray  # (n_captions, d) float32
    images: pd.DataFrame  # image_id, path, split
    captions: pd.DataFrame  # caption_id, image_id, split, caption

    def pairs(self, split: str = "train"):
        """(image_pairs, text_pairs, caption_ids) for one split: one row per caption, its image repeated."""
        caps = self.captions[self.captions.split == split]
        ids = caps.caption_id.to_numpy()
        return self.image[caps.image_id.to_numpy()], self.text[ids], ids  # (n, d), (n, d), (n,)


def check_params(ann_format: str, max_words) -> None:
    """The embed parameters, before any work (notebook 01 calls this first)."""
    if ann_format not in ("karpathy", "blip"):
        raise ValueError(f"unknown annotation format {ann_format!r}; use 'karpathy' or 'blip' (embed.ann_format).")
    if isinstance(max_words, bool) or not isinstance(max_words, int | np.integer) or max_words < 0:
        raise ValueError(f"max_words={max_words!r} must be a whole number >= 0 (0 keeps every word; embed.max_words).")


def split_preprocess(preprocess):
    """(pil_part, mean, std) when `preprocess` is a torchvision Compose ending in ToTensor + Normalize (open_clip's
    eval transform), else None.

    `embed_images` then runs the PIL part per image, batches uint8 pixels and applies ToTensor + Normalize once
    per batch: the same float operations, so the same numbers, without ~0.2 ms of per-image tensor overhead
    (which bounds throughput when the CLIP is small, as the toy one on 32x32 images).
    """
    from torchvision import transforms as T

    steps = getattr(preprocess, "transforms", None)
    if not isinstance(preprocess, T.Compose) or not steps or len(steps) < 2:
        return None
    to_tensor, norm = steps[-2], steps[-1]
    if type(to_tensor).__name__ not in ("ToTensor", "MaybeToTensor") or not isinstance(norm, T.Normalize):
        return None
    return T.Compose(steps[:-2]), tuple(norm.mean), tuple(norm.std)


def to_model_input(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float (B, 3, H, W): torchvision's ToTensor (/255) then Normalize, batched."""
    from torchvision.transforms import functional as F

    return F.normalize(x.to(torch.get_default_dtype()).div(255), mean, std, inplace=True)


class ImageFiles(Dataset):
    """Images of a dataset, decoded and preprocessed in DataLoader workers so the model stays busy.

    With `uint8=True` the items are (3, H, W) uint8 pixels after `preprocess` (a PIL-only transform; see
    `split_preprocess`), so a batch travels between processes at a quarter of the float size.
    """

    def __init__(self, root, paths, preprocess, uint8: bool = False):
        self.root, self.paths, self.preprocess, self.uint8 = Path(root), list(paths), preprocess, uint8

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        image = self.preprocess(data.load_image(self.root, self.paths[i]))
        if not self.uint8:
            return image
        if image.mode != "RGB":  # the PIL part of open_clip's transform ends with convert("RGB")
            raise ValueError(f"preprocessing {self.paths[i]} gave a {image.mode} image; expected RGB.")
        return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)  # (3, H, W)


def _batches(loader, desc, progress=True):
    return tqdm(loader, desc=desc, unit="batch", leave=False, disable=not progress)


@torch.inference_mode()
def embed_images(model, preprocess, root, paths, batch_size: int = 256, num_workers: int = 0,
                 device: str = "cpu", progress: bool = True) -> np.ndarray:
    """CLIP image embeddings of `root/paths[i]` -> (n, d) float32, unnormalised.

    Workers (`num_workers`) decode in parallel with the model; ToTensor + Normalize run once per batch, on
    `device` (see `split_preprocess`), with results equal to applying `preprocess` image by image.
    """
    split = split_preprocess(preprocess)
    dataset = ImageFiles(root, paths, preprocess) if split is None else ImageFiles(root, paths, split[0], uint8=True)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        persistent_workers=False)
    out = []
    for x in _batches(loader, "images", progress):
        x = x.to(device)
        if split is not None:
            x = to_model_input(x, split[1], split[2])  # (B, 3, H, W) float
        out.append(model.encode_image(x).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


@torch.inference_mode()
def embed_pil_images(model, preprocess, images, batch_size: int = 256, device: str = "cpu") -> np.ndarray:
    """CLIP embeddings of in-memory PIL images -> (n, d) float32 (used to re-embed synthetic images)."""
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.stack([preprocess(im.convert("RGB")) for im in images[i:i + batch_size]]).to(device)
        out.append(model.encode_image(x).float().cpu())
    return torch.cat(out).numpy()


@torch.inference_mode()
def embed_texts(model, tokenizer, texts, batch_size: int = 1024, device: str = "cpu",
                progress: bool = True) -> np.ndarray:
    """CLIP text embeddings of `texts` -> (n, d) float32, unnormalised."""
    texts = list(texts)
    out = []
    for i in tqdm(range(0, len(texts), batch_size), desc="captions", unit="batch", leave=False, disable=not progress):
        out.append(model.encode_text(tokenizer(texts[i:i + batch_size]).to(device)).float().cpu())
    return torch.cat(out).numpy()


def embed_dataset(model, preprocess, tokenizer, images: pd.DataFrame, captions: pd.DataFrame, root,
                  batch_size: int = 256, num_workers: int = 0, device: str = "cpu",
                  progress: bool = True) -> Embeddings:
    """Embed every image and caption of a dataset (all splits). Rows follow image_id / caption_id."""
    if len(images) == 0 or len(captions) == 0:
        raise ValueError("the dataset has no images or no captions; check the annotation file.")
    if not (images.image_id.to_numpy() == np.arange(len(images))).all():
        raise ValueError("image_id must equal the row number; load tables with pds.data.load_dataset.")
    image = embed_images(model, preprocess, root, images.path, batch_size, num_workers, device, progress)
    text = embed_texts(model, tokenizer, captions.caption, 4 * batch_size, device, progress)
    for name, x in (("image", image), ("text", text)):
        if not np.isfinite(x).all():
            raise ValueError(f"the CLIP produced non-finite {name} embeddings; check the model weights.")
    return Embeddings(image.astype(np.float32), text.astype(np.float32), images, captions)


FILES = ("images.parquet", "captions.parquet", "image.npy", "text.npy")


def save_embeddings(out_dir, emb: Embeddings) -> Path:
    """Write the two tables and the two arrays, then manifest.json (the folder is one run only once it exists)."""
    out_dir = Path(out_dir)
    artifacts.begin(out_dir)
    data.save_table(out_dir / "images.parquet", emb.images)
    data.save_table(out_dir / "captions.parquet", emb.captions)
    data.save_npy(out_dir / "image.npy", emb.image)
    data.save_npy(out_dir / "text.npy", emb.text)
    artifacts.write_manifest(out_dir, "embed", FILES)
    return out_dir


def load_embeddings(emb_dir) -> Embeddings:
    """Read what `save_embeddings` wrote, refusing a folder that is not one finished run."""
    emb_dir = Path(emb_dir)
    artifacts.open_artifact(emb_dir, "embed")
    emb = Embeddings(data.load_npy(emb_dir / "image.npy"), data.load_npy(emb_dir / "text.npy"),
                     data.load_table(emb_dir / "images.parquet"), data.load_table(emb_dir / "captions.parquet"))
    if len(emb.image) != len(emb.images) or len(emb.text) != len(emb.captions):
        raise ValueError(f"{emb_dir}: arrays and tables disagree in length; re-run the embed stage.")
    return emb

