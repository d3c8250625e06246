"""Toy CLIP (stage toymodels): a small open_clip ViT trained contrastively on the toy world's train split,
saved as an open_clip `local-dir:` folder so it loads through exactly the call that loads real CLIPs.
"""

import json
import math
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from safetensors.torch import save_file
from tqdm.auto import tqdm

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"


def toy_clip_config(embed_dim: int = 64, image_size: int = 32, patch_size: int = 4, vision_width: int = 128,
                    vision_layers: int = 4, text_width: int = 128, text_layers: int = 3,
                    context_length: int = 32) -> dict:
    """The open_clip config file of the toy CLIP: `model_cfg` (a custom ViT/text-transformer CLIP) and
    `preprocess_cfg`. The tokenizer is open_clip's bundled BPE (no `hf_tokenizer_name`)."""
    heads = max(1, vision_width // 32)
    return {
        "model_cfg": {
            "embed_dim": embed_dim,
            "vision_cfg": {"image_size": image_size, "patch_size": patch_size, "width": vision_width,
                           "layers": vision_layers, "head_width": vision_width // heads, "mlp_ratio": 4.0},
            "text_cfg": {"context_length": context_length, "vocab_size": 49408, "width": text_width,
                         "heads": max(1, text_width // 32), "layers": text_layers},
        },
        "preprocess_cfg": {"size": image_size, "mode": "RGB", "mean": list(OPENAI_DATASET_MEAN),
                           "std": list(OPENAI_DATASET_STD), "interpolation": "bicubic",
                           "resize_mode": "shortest"},
    }


def build_toy_clip(config: dict) -> open_clip.CLIP:
    """A randomly initialised open_clip CLIP from a `toy_clip_config` dict (torch's global seed decides init)."""
    cfg = config["model_cfg"]
    return open_clip.CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"], text_cfg=cfg["text_cfg"])


def save_toy_clip(model: open_clip.CLIP, config: dict, out_dir) -> Path:
    """Write `open_clip_config.json` + `open_clip_model.safetensors` (fp32) into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / WEIGHTS_FILE))
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return out_dir


def normalize_images(images: torch.Tensor, config: dict) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W), normalised exactly as open_clip's preprocess does for
    images already at the model's resolution (its resize and crop are then the identity)."""
    pre = config["preprocess_cfg"]
    mean = torch.tensor(pre["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(pre["std"]).view(1, 3, 1, 1)
    return (images.permute(0, 3, 1, 2).float() / 255.0 - mean) / std


def caption_table(image_ids: np.ndarray, n_images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For caption rows owned by `image_ids` (n_captions,), an index table (n_images, max_caps) of caption
    rows per image (padded with the first caption) and the count per image (n_images,)."""
    counts = np.bincount(image_ids, minlength=n_images)
    if (counts == 0).any():
        raise ValueError(f"{int((counts == 0).sum())} training images have no caption; fix the annotations.")
    table = np.zeros((n_images, counts.max()), dtype=np.int64)
    fill = np.zeros(n_images, dtype=np.int64)
    for row, i in enumerate(image_ids):
        table[i, fill[i]] = row
        fill[i] += 1
    for i in np.flatnonzero(counts < counts.max()):
        table[i, counts[i]:] = table[i, 0]
    return torch.from_numpy(table), torch.from_numpy(counts)


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of matched (image, text) features, both (B, d) and L2-normalised."""
    logits = logit_scale * image_features @ text_features.T  # (B, B)
    labels = torch.arange(len(logits))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def epoch_batches(n: int, batch_size: int, gen: torch.Generator):
    """Endless batches of row indices: epochs of a seeded permutation of range(n), each cut into full
    batches (an epoch's remainder is dropped). Draws from `gen` lazily, when the next batch is asked for."""
    if n < batch_size:
        raise ValueError(f"batch_size {batch_size} exceeds the {n} training rows; lower it.")
    while True:
        order = torch.randperm(n, generator=gen)
        for pos in range(0, n - batch_size + 1, batch_size):
            yield order[pos:pos + batch_size]


def train_toy_clip(model: open_clip.CLIP, config: dict, images: torch.Tensor, tokens: torch.Tensor,
                   caption_image: np.ndarray, steps: int, batch_size: int = 256, lr: float = 1e-3,
                   weight_decay: float = 0.1, warmup: int = 100, seed: int = 0, shift: int = 0,
                   progress: bool = True) -> list[float]:
    """Contrastive training in place; returns the loss per step.

    images: uint8 (N, H, W, 3); tokens: int64 (n_captions, context_length) from open_clip's tokenizer;
    caption_image: (n_captions,) image row of each caption. Each step draws `batch_size` distinct images
    (epochs of a seeded permutation) and one of each image's captions at random. `shift` > 0 adds a random
    translation of up to `shift` pixels (edge padding) as light augmentation.
    """
    gen = torch.Generator().manual_seed(seed)
    batches = epoch_batches(len(images), batch_size, gen)
    table, counts = caption_table(caption_image, len(images))
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98), eps=1e-6)
    model.train()
    losses = []
    bar = tqdm(range(steps), desc="toy CLIP", unit="step", disable=not progress)
    for step in bar:
        idx = next(batches)
        pick = (torch.rand(batch_size, generator=gen) * counts[idx]).long()
        text = tokens[table[idx, pick]]
        x = normalize_images(images[idx], config)
        if shift:
            x = _random_shift(x, shift, gen)
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, steps, lr, warmup)
        image_features = F.normalize(model.encode_image(x), dim=-1)
        text_features = F.normalize(model.encode_text(text), dim=-1)
        loss = clip_loss(image_features, text_features, model.logit_scale.exp().clamp(max=100))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    model.eval()
    return losses


def _random_shift(x: torch.Tensor, shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by up to `shift` pixels (replicated border); x is (B, 3, H, W)."""
    b, _, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift), mode="replicate")
    dy, dx = torch.randint(0, 2 * shift + 1, (2, b), generator=gen)
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])


@torch.inference_mode()
def encode_images(model: open_clip.CLIP, config: dict, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Unnormalised image embeddings of uint8 (N, H, W, 3) images -> (N, d) float32."""
    return torch.cat([model.encode_image(normalize_images(images[i:i + batch_size], config))
                      for i in range(0, len(images), batch_size)])


@torch.inference_mode()
def encode_tokens(model: open_clip.CLIP, tokens: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Unnormalised text embeddings of tokenised captions (n, context_length) -> (n, d) float32."""
    return torch.cat([model.encode_text(tokens[i:i + batch_size]) for i in range(0, len(tokens), batch_size)])
