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

from pds import data


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


class ImageFiles(Dataset):
    """Images of a dataset, decoded and preprocessed in DataLoader workers so the model stays busy."""

    def __init__(self, root, paths, preprocess):
        self.root, self.paths, self.preprocess = Path(root), list(paths), preprocess

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.preprocess(data.load_image(self.root, self.paths[i]))


def _batches(loader, desc):
    return tqdm(loader, desc=desc, unit="batch", leave=False)


@torch.inference_mode()
def embed_images(model, preprocess, root, paths, batch_size: int = 256, num_workers: int = 0,
                 device: str = "cpu") -> np.ndarray:
    """CLIP image embeddings of `root/paths[i]` -> (n, d) float32, unnormalised."""
    loader = DataLoader(ImageFiles(root, paths, preprocess), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, persistent_workers=False)
    out = [model.encode_image(x.to(device)).float().cpu() for x in _batches(loader, "images")]
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
def embed_texts(model, tokenizer, texts, batch_size: int = 1024, device: str = "cpu") -> np.ndarray:
    """CLIP text embeddings of `texts` -> (n, d) float32, unnormalised."""
    texts = list(texts)
    out = []
    for i in tqdm(range(0, len(texts), batch_size), desc="captions", unit="batch", leave=False):
        out.append(model.encode_text(tokenizer(texts[i:i + batch_size]).to(device)).float().cpu())
    return torch.cat(out).numpy()


def embed_dataset(model, preprocess, tokenizer, images: pd.DataFrame, captions: pd.DataFrame, root,
                  batch_size: int = 256, num_workers: int = 0, device: str = "cpu") -> Embeddings:
    """Embed every image and caption of a dataset (all splits). Rows follow image_id / caption_id."""
    if len(images) == 0 or len(captions) == 0:
        raise ValueError("the dataset has no images or no captions; check the annotation file.")
    if not (images.image_id.to_numpy() == np.arange(len(images))).all():
        raise ValueError("image_id must equal the row number; load tables with pds.data.load_dataset.")
    image = embed_images(model, preprocess, root, images.path, batch_size, num_workers, device)
    text = embed_texts(model, tokenizer, captions.caption, 4 * batch_size, device)
    for name, x in (("image", image), ("text", text)):
        if not np.isfinite(x).all():
            raise ValueError(f"the CLIP produced non-finite {name} embeddings; check the model weights.")
    return Embeddings(image.astype(np.float32), text.astype(np.float32), images, captions)


def save_embeddings(out_dir, emb: Embeddings) -> Path:
    out_dir = Path(out_dir)
    data.save_table(out_dir / "images.parquet", emb.images)
    data.save_table(out_dir / "captions.parquet", emb.captions)
    data.save_npy(out_dir / "image.npy", emb.image)
    data.save_npy(out_dir / "text.npy", emb.text)
    return out_dir


def load_embeddings(emb_dir) -> Embeddings:
    emb_dir = Path(emb_dir)
    emb = Embeddings(data.load_npy(emb_dir / "image.npy"), data.load_npy(emb_dir / "text.npy"),
                     data.load_table(emb_dir / "images.parquet"), data.load_table(emb_dir / "captions.parquet"))
    if len(emb.image) != len(emb.images) or len(emb.text) != len(emb.captions):
        raise ValueError(f"{emb_dir}: arrays and tables disagree in length; re-run the embed stage.")
    return emb

