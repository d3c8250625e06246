"""The text_features stage: features of every caption under the frozen student text encoder of the field's
protocol (MiniLM on the toy world, BERT on the real path), computed once for all evaluations (notebook
05_evaluate reads them).

    python -m pds.text_features --embeddings-dir data/embeddings --text-encoder minilm --out data/text_features
"""

import argparse
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pds import artifacts, data, paths


@torch.no_grad()
def encode_texts(encoder, texts: Sequence[str], batch_size: int = 256, progress: bool = True) -> np.ndarray:
    """Features of a frozen `pds.models.TextEncoder` for each text: (n, dim) float32.

    Each distinct text is encoded once, in batches of similar length (less padding); pooling and
    normalisation follow the encoder (mean + L2 for MiniLM, CLS for BERT).
    """
    texts = list(texts)
    if not texts:
        raise ValueError("no texts to encode.")
    unique, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    order = np.argsort([len(t) for t in unique], kind="stable")
    device = next(encoder.model.parameters()).device
    feats = np.zeros((len(unique), encoder.dim), dtype=np.float32)
    for lo in tqdm(range(0, len(unique), batch_size), desc="text features", unit="batch", disable=not progress):
        idx = order[lo:lo + batch_size]
        batch = encoder.tokenizer([str(t) for t in unique[idx]], padding=True, truncation=True,
                                  max_length=encoder.max_length, return_tensors="pt").to(device)
        hidden = encoder.model(**batch).last_hidden_state  # (B, L, dim)
        if encoder.pooling == "mean":
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        else:
            pooled = hidden[:, 0]
        if encoder.normalize:
            pooled = F.normalize(pooled, dim=-1)
        feats[idx] = pooled.float().cpu().numpy()
    return feats[inverse.reshape(-1)]


def captions_digest(captions: pd.DataFrame) -> str:
    """A hash of (caption_id, caption): cached features are refused when the captions changed."""
    h = hashlib.sha256()
    for cid, text in zip(captions["caption_id"].to_numpy(), captions["caption"].astype(str), strict=True):
        h.update(f"{int(cid)}\t{text}\n".encode())
    return h.hexdigest()


def save_text_features(out_dir, features: np.ndarray, captions: pd.DataFrame, encoder) -> None:
    """Write text.npy (n_captions, dim) and meta.json (encoder name, pooling, dimension, captions digest)."""
    if len(features) != len(captions):
        raise ValueError(f"{len(features)} feature rows for {len(captions)} captions.")
    out = Path(out_dir)
    artifacts.begin(out)
    data.save_npy(out / "text.npy", features.astype(np.float32))
    data.save_json(out / "meta.json", {"text_encoder": encoder.name, "pooling": encoder.pooling,
                                       "normalize": int(encoder.normalize), "dim": int(features.shape[1]),
                                       "n_captions": len(captions), "captions_sha256": captions_digest(captions)})
    artifacts.write_manifest(out, "text_features", ["text.npy", "meta.json"])


def load_text_features(features_dir, captions: pd.DataFrame, text_encoder: str = "") -> np.ndarray:
    """The cached caption features (n_captions, dim), rows = caption_id; checked against the captions table
    (and against `text_encoder` when given); a folder that is not one finished run is refused."""
    d = Path(features_dir)
    artifacts.open_artifact(d, "text_features")
    meta = data.load_json(d / "meta.json")
    feats = data.load_npy(d / "text.npy")
    if text_encoder and meta["text_encoder"] != text_encoder:
        raise ValueError(f"{d} holds {meta['text_encoder']} features but text_encoder={text_encoder!r}; re-run "
                         "the text_features stage.")
    if len(feats) != len(captions) or meta["captions_sha256"] != captions_digest(captions):
        raise ValueError(f"{artifacts.show(d)} was made for other captions ({meta['captions_sha256'][:16]}) than "
                         f"the embeddings' captions.parquet holds ({captions_digest(captions)[:16]}): rerun "
                         f"{artifacts.rerun_hint('text_features')}.")
    if not (captions["caption_id"].to_numpy() == np.arange(len(captions))).all():
        raise ValueError("caption_id must be the row number of the captions table (0..n-1).")
    return feats


def compute_text_features(embeddings_dir, text_encoder: str, out_dir, batch_size: int = 256,
                          progress: bool = True) -> Path:
    """Encode every caption of `embeddings_dir/captions.parquet` with the frozen student text encoder and
    write `out_dir/text.npy` + `meta.json`."""
    from pds import models

    # the captions of one finished embed run (only this file is checked: CLIP's floats are not read here)
    artifacts.open_artifact(embeddings_dir, "embed", names=["captions.parquet"])
    captions = data.load_table(Path(embeddings_dir) / "captions.parquet")
    encoder = models.load_text_encoder(text_encoder)
    feats = encode_texts(encoder, captions["caption"].astype(str).tolist(), batch_size, progress)
    save_text_features(out_dir, feats, captions, encoder)
    return Path(out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Student text features of every caption (frozen text encoder).")
    parser.add_argument("--embeddings-dir", default="data/embeddings", help="reads its captions.parquet only")
    parser.add_argument("--text-encoder", default="minilm", help="minilm (packaged all-MiniLM-L6-v2), bert-base-uncased "
                        "or a local transformers folder")
    parser.add_argument("--out", default="data/text_features")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("PDS_NUM_THREADS", 2)))
    progress = paths.progress()
    if not progress:  # transformers draws its own bar while loading weights
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    out = compute_text_features(paths.resolve(args.embeddings_dir), args.text_encoder, paths.resolve(args.out),
                                paths.batch_size(256), progress=progress)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
