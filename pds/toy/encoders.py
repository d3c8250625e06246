"""ImageNet-like pretraining of the toy student image encoders (part of stage toymodels).

    python -m pds.toy.encoders --out models/toyworld/toy-encoders

The field's students start from ImageNet weights. The toy stand-in: a separate classification set drawn
freshly from the toy world generator (`pds.toy.world`) under its own seed -- never the toy world's
train / val / test images -- labelled with every scene attribute (shape, colour, size, count, arrangement,
position, background), one linear head per attribute on top of each encoder's features. Writes
`<out>/<name>/model.safetensors` (encoder only, no heads) and `config.json` (architecture, input size,
normalisation, pretraining facts and held-out accuracies). Seeded and deterministic on CPU.
"""

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from pds import data
from pds.paths import resolve
from pds.students import ARCHS, STUDENTS, build_student
from pds.toy import world
from pds.toy.scene import (
    ARRANGEMENTS,
    BACKGROUNDS,
    COLOURS,
    COUNTS,
    POSITIONS,
    SHAPES,
    SIZES,
    draw_image,
    sample_attributes,
)

TODAYS = world.Knobs()  # today's world: every knob at its default

# label values per attribute, in the generator's order
LABELS = {"shape": SHAPES, "colour": COLOURS, "size": SIZES, "count": COUNTS,
          "arrangement": ARRANGEMENTS, "position": POSITIONS, "background": BACKGROUNDS}


def draw_classification_set(n: int, image_size: int, seed: int, progress: bool = True,
                            knobs: world.Knobs = TODAYS):
    """`n` freshly drawn toy scenes of the world `knobs` describes: uint8 images (n, 3, S, S) and int64 labels
    {attribute: (n,)}, values as `knobs.labels(LABELS)` orders them.

    Today's world (the default knobs): the stream is keyed by ("pretrain", seed), apart from the toy world's
    (seed, split, index) streams. A realistic world: its scenes (clutter, texture, secondary objects, its
    vocabulary) drawn as a world of seed `seed`, but with every concept equally common and no mismatched
    captions -- ImageNet's classes are balanced whatever the captioned data's long tail.
    """
    if n < 1:
        raise ValueError(f"n={n} must be a positive number of images.")
    values = knobs.labels(LABELS)
    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    labels = {k: np.empty(n, dtype=np.int64) for k in values}
    todays = knobs == TODAYS
    if todays:
        rngs = np.random.SeedSequence([int(seed), 0x9E7]).spawn(2)
        attr_rng, draw_rng = np.random.default_rng(rngs[0]), np.random.default_rng(rngs[1])
    else:
        knobs = replace(knobs, zipf_exponent=0.0, mismatch_rate=0.0)
    for i in tqdm(range(n), desc="pretraining images", unit="img", disable=not progress, leave=False):
        if todays:
            attrs = sample_attributes(attr_rng)
            images[i] = np.asarray(draw_image(attrs, image_size, draw_rng))
        else:
            scene = world.sample_scene(int(seed), "train", i, knobs)
            attrs = scene["attributes"]
            images[i] = np.asarray(world.render_scene(scene, int(seed), "train", i, image_size, knobs))
        for k, v in values.items():
            labels[k][i] = v.index(attrs[k])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), {k: torch.from_numpy(v) for k, v in labels.items()}


class MultiHead(nn.Module):
    """Encoder + one linear classifier per attribute (the heads are dropped after pretraining)."""

    def __init__(self, encoder: nn.Module, num_features: int, values: dict[str, list] = LABELS):
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict({k: nn.Linear(num_features, len(v)) for k, v in values.items()})

    def forward(self, x):
        f = self.encoder(x)
        return {k: h(f) for k, h in self.heads.items()}


@torch.no_grad()
def attribute_accuracy(model: MultiHead, x: torch.Tensor, labels: dict, batch_size: int = 500) -> dict[str, float]:
    model.eval()
    preds = {k: [] for k in LABELS}
    for lo in range(0, len(x), batch_size):
        for k, logits in model(x[lo:lo + batch_size]).items():
            preds[k].append(logits.argmax(1))
    model.train()
    return {k: round(float((torch.cat(p) == labels[k]).float().mean()), 4) for k, p in preds.items()}


def pretrain_encoder(name: str, images: torch.Tensor, labels: dict, val_images: torch.Tensor, val_labels: dict,
                     mean, std, epochs: int = 4, batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
                     progress: bool = True, values: dict[str, list] = LABELS) -> tuple[nn.Module, dict]:
    """Train `name` (pds.students) with AdamW and a cosine schedule on the summed attribute cross-entropies
    (`values`: the label values per attribute). Returns (encoder, held-out accuracy per attribute)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    encoder = build_student(name, image_size=images.shape[-1], **ARCHS[name])
    model = MultiHead(encoder, encoder.num_features, values)
    m = torch.tensor(mean).view(1, 3, 1, 1) * 255
    s = torch.tensor(std).view(1, 3, 1, 1) * 255
    x, xv = (images.float() - m) / s, (val_images.float() - m) / s
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * -(-len(x) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    bar = tqdm(total=steps, desc=f"pretrain {name}", unit="step", disable=not progress)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for lo in range(0, len(x), batch_size):
            b = perm[lo:lo + batch_size]
            out = model(x[b])
            loss = sum(F.cross_entropy(out[k], labels[k][b]) for k in LABELS)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    return encoder, attribute_accuracy(model, xv, val_labels)


def pretrain_toy_encoders(out_dir, names=STUDENTS, n_images: int = 12000, n_val: int = 2000, image_size: int = 32,
                          epochs: int = 4, batch_size: int = 128, lr: float = 2e-3, seed: int = 1234,
                          progress: bool = True, knobs: world.Knobs = TODAYS) -> dict:
    """Pretrain each toy encoder and save it under `out_dir/<name>/` (weights and config.json, byte-identical
    across runs with the same arguments and thread count); returns {name: config + training seconds}.
    `knobs`: the world whose scenes are drawn (`draw_classification_set`); default: today's."""
    unknown = [n for n in names if n not in STUDENTS]
    if unknown:
        raise ValueError(f"unknown toy encoders {unknown}; choose from {', '.join(STUDENTS)}.")
    images, labels = draw_classification_set(n_images + n_val, image_size, seed, progress, knobs)
    values = knobs.labels(LABELS)
    tr, va = slice(0, n_images), slice(n_images, n_images + n_val)
    px = images[tr].float() / 255
    mean = [round(float(v), 4) for v in px.mean(dim=(0, 2, 3))]
    std = [round(float(v), 4) for v in px.std(dim=(0, 2, 3))]
    configs = {}
    for name in names:
        start = time.perf_counter()
        encoder, acc = pretrain_encoder(name, images[tr], {k: v[tr] for k, v in labels.items()}, images[va],
                                        {k: v[va] for k, v in labels.items()}, mean, std, epochs, batch_size, lr,
                                        seed, progress, values)
        config = {"name": name, "arch": ARCHS[name], "image_size": image_size, "mean": mean, "std": std,
                  "num_features": int(encoder.num_features),
                  "pretraining": {"task": "toy-world attribute classification (" + ", ".join(LABELS) + ")",
                                  "images": n_images, "val_images": n_val, "seed": seed,
                                  "note": "freshly drawn scenes, not the toy world's train/val/test images",
                                  "epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": "AdamW",
                                  "val_accuracy": acc}}
        if knobs.non_default():  # today's config.json has no such key
            config["pretraining"]["world_knobs"] = knobs.non_default()
        d = Path(out_dir) / name
        state = {k: v.detach().contiguous() for k, v in encoder.state_dict().items()}
        data.atomic_write(d / "model.safetensors", lambda tmp, s=state: save_file(s, str(tmp)))
        data.save_json(d / "config.json", config)
        configs[name] = config | {"seconds": round(time.perf_counter() - start, 1)}  # reported, not saved
    return configs


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Pretrain the toy student image encoders (ImageNet stand-in).")
    p.add_argument("--out", default="models/toyworld/toy-encoders")
    p.add_argument("--names", default=",".join(STUDENTS), help="comma-separated subset of " + ",".join(STUDENTS))
    p.add_argument("--n-images", type=int, default=12000)
    p.add_argument("--n-val", type=int, default=2000)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--world", default="", help="a generated world whose knobs the pretraining scenes take "
                   "(its dataset_toyworld.json); empty or today's world: today's scenes")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (results are deterministic for a given count)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    configs = pretrain_toy_encoders(resolve(a.out), [n for n in a.names.split(",") if n], a.n_images, a.n_val,
                                    a.image_size, a.epochs, a.batch_size, a.lr, a.seed,
                                    knobs=world.world_knobs(resolve(a.world)) if a.world else TODAYS)
    print(json.dumps({n: {"val_accuracy": c["pretraining"]["val_accuracy"], "seconds": c["seconds"]}
                      for n, c in configs.items()}, indent=1))


if __name__ == "__main__":
    main()
