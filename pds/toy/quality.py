"""Measured quality of the toy models (stage toymodels): zero-shot retrieval of the toy CLIP and the
round-trip fidelity of the toy unCLIP decoder, on the toy world's test split.

    python -m pds.toy.quality --world data/raw/toyworld --models models/toyworld

writes `<models>/quality.json` and `<models>/unclip_roundtrip.png` (the figures quoted in models/README.md).
With `--split val` the round trip uses validation images instead: for choosing between retrained decoders
(`--models` pointing at their folder) without looking at the test split.
"""

import argparse
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from pds import data
from pds.paths import resolve
from pds.toy import world
from pds.toy.scene import ARRANGEMENTS, BACKGROUNDS, COLOURS, COUNTS, POSITIONS, SHAPES, SIZES
from pds.toy.unclip import to_unit_range

# what the judge names, with its classes; LAYOUT is what Min-SNR weighting lost (models/README.md)
JUDGED = {"shape": SHAPES, "colour": COLOURS, "count": COUNTS, "arrangement": ARRANGEMENTS,
          "position": POSITIONS, "size": SIZES, "background": BACKGROUNDS}
LAYOUT = ("count", "arrangement", "position")

KS = (1, 5, 10)


def retrieval_recall(image_emb: np.ndarray, text_emb: np.ndarray, text_image: np.ndarray, ks=KS) -> dict:
    """Image<->text recall in percent. image_emb (Ni, d), text_emb (Nt, d), text_image (Nt,) the image row of
    each caption. TR@K: an image is a hit if any of its captions ranks < K; IR@K: a caption is a hit if its
    image ranks < K."""
    img = F.normalize(torch.as_tensor(image_emb, dtype=torch.float32), dim=-1)
    txt = F.normalize(torch.as_tensor(text_emb, dtype=torch.float32), dim=-1)
    sim = img @ txt.T  # (Ni, Nt)
    text_image = torch.as_tensor(text_image)
    out = {}
    # rank of the best ground-truth caption per image = number of captions scoring strictly higher
    gt = torch.zeros_like(sim, dtype=torch.bool)
    gt[text_image, torch.arange(len(text_image))] = True
    best_gt = sim.masked_fill(~gt, -np.inf).max(1).values  # (Ni,)
    tr_rank = (sim > best_gt[:, None]).sum(1)  # (Ni,)
    own = sim[text_image, torch.arange(len(text_image))]  # (Nt,)
    ir_rank = (sim > own[None, :]).sum(0)  # (Nt,)
    for k in ks:
        out[f"TR@{k}"] = round(100 * float((tr_rank < k).float().mean()), 2)
    for k in ks:
        out[f"IR@{k}"] = round(100 * float((ir_rank < k).float().mean()), 2)
    return out


def _plural(shape: str) -> str:
    return shape + ("es" if shape.endswith(("s", "x")) else "s")


def class_prompts(shapes=SHAPES, colours=COLOURS) -> tuple[list[tuple[str, str]], list[list[str]]]:
    """Zero-shot classes (shape, colour) for every shapes x colours pair, each with prompts covering the
    toy world's counts ('a red circle', 'two red circles', 'three red circles')."""
    classes = [(s, c) for s in shapes for c in colours]
    prompts = [[f"a {c} {s}", f"two {c} {_plural(s)}", f"three {c} {_plural(s)}"] for s, c in classes]
    return classes, prompts


@torch.inference_mode()
def zero_shot_classifier(model, tokenizer, shapes=SHAPES, colours=COLOURS) -> tuple[list[tuple[str, str]], torch.Tensor]:
    """Class names and their normalised mean prompt embeddings (n_classes, d)."""
    classes, prompts = class_prompts(shapes, colours)
    weights = []
    for ps in prompts:
        e = F.normalize(model.encode_text(tokenizer(ps)).float(), dim=-1).mean(0)
        weights.append(F.normalize(e, dim=0))
    return classes, torch.stack(weights)


def classify(image_emb: torch.Tensor, classes, weights: torch.Tensor) -> list[tuple[str, str]]:
    """(shape, colour) predicted for each image embedding (N, d)."""
    pred = (F.normalize(torch.as_tensor(image_emb).float(), dim=-1) @ weights.T).argmax(1)
    return [classes[int(i)] for i in pred]


@torch.inference_mode()
def embed_pil(model, preprocess, images: list[Image.Image]) -> torch.Tensor:
    """Unnormalised CLIP image embeddings of PIL images -> (N, d)."""
    return torch.cat([model.encode_image(torch.stack([preprocess(im) for im in images[i:i + 500]]))
                      for i in range(0, len(images), 500)]).float()


class AttributeJudge(torch.nn.Module):
    """A small CNN that names every generating attribute of a toy image (JUDGED: shape, colour, count,
    arrangement, position, size, background): an automatic judge for decoded images, independent of the toy
    CLIP (which encodes colour far better than shape). It pools to a 4x4 grid, not to one vector, so that
    position survives."""

    def __init__(self, judged: dict[str, list] = JUDGED):
        super().__init__()
        self.judged = judged

        def conv(i, o):
            return torch.nn.Sequential(torch.nn.Conv2d(i, o, 3, padding=1), torch.nn.BatchNorm2d(o), torch.nn.ReLU())

        self.features = torch.nn.Sequential(conv(3, 32), torch.nn.MaxPool2d(2), conv(32, 64), torch.nn.MaxPool2d(2),
                                            conv(64, 64), torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten())
        self.heads = torch.nn.ModuleDict({name: torch.nn.Linear(64 * 16, len(classes))
                                          for name, classes in judged.items()})

    def forward(self, x) -> dict[str, torch.Tensor]:
        """x: uint8 (B, H, W, 3) images, or float (B, 3, H, W) in [-1, 1] -> {attribute: logits (B, classes)}."""
        if x.dtype == torch.uint8:
            x = to_unit_range(x)
        h = self.features(x)
        return {name: head(h) for name, head in self.heads.items()}

    @torch.inference_mode()
    def predict(self, images: torch.Tensor) -> pd.DataFrame:
        """The attributes of uint8 images (N, H, W, 3): one row per image, one column per JUDGED attribute."""
        self.eval()
        out = {name: [] for name in self.judged}
        for i in range(0, len(images), 500):
            for name, logits in self(images[i:i + 500]).items():
                out[name] += [self.judged[name][int(k)] for k in logits.argmax(1)]
        return pd.DataFrame(out)


def degrade(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random mild degradation of float images (B, 3, H, W) in [-1, 1], one draw per image: a blend with
    a 3x3 box blur, a small gain and offset per channel, and Gaussian noise. Decoded images are blurred,
    haloed and tinted a little; a judge that has only seen clean pixels takes such a red triangle for a
    purple one (models/README.md), so it is trained on both."""
    b = len(x)
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    a = torch.rand(b, 1, 1, 1, generator=gen)
    gain = 1 + 0.1 * (2 * torch.rand(b, 3, 1, 1, generator=gen) - 1)
    offset = 0.05 * (2 * torch.rand(b, 3, 1, 1, generator=gen) - 1)
    noise = 0.1 * torch.rand(b, 1, 1, 1, generator=gen) * torch.randn(x.shape, generator=gen)
    return (((1 - a) * x + a * blurred) * gain + offset + noise).clamp(-1, 1)


def train_judge(images: torch.Tensor, labels: pd.DataFrame, steps: int = 1000, batch_size: int = 64,
                seed: int = 0, progress: bool = True, judged: dict[str, list] = JUDGED) -> AttributeJudge:
    """Fit an AttributeJudge on uint8 images (N, H, W, 3) with their attributes (one row per image, the
    JUDGED columns; split_arrays reads them; `judged`: their classes). Half of each batch is `degrade`d."""
    missing = [name for name in JUDGED if name not in labels.columns]
    if missing or len(labels) != len(images):
        raise ValueError(f"labels need one row per image ({len(images)}) and the columns {list(JUDGED)}; "
                         f"got {len(labels)} rows, missing {missing}.")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    judge = AttributeJudge(judged)
    ys = {name: torch.tensor([classes.index(v) for v in labels[name]]) for name, classes in judged.items()}
    opt = torch.optim.AdamW(judge.parameters(), lr=2e-3)
    judge.train()
    for _ in tqdm(range(steps), desc="attribute judge", unit="step", disable=not progress):
        idx = torch.randint(0, len(images), (batch_size,), generator=gen)
        x = to_unit_range(images[idx])
        x = torch.cat([x[:batch_size // 2], degrade(x[batch_size // 2:], gen)])
        logits = judge(x)
        loss = sum(F.cross_entropy(logits[name], ys[name][idx]) for name in JUDGED)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return judge.eval()


def roundtrip_grid(conditioning: list[Image.Image], decoded: list[Image.Image], n: int = 16, cols: int = 4,
                   scale: int = 4) -> Image.Image:
    """A grid of (conditioning | decoded) pairs, `cols` pairs per row, pixels enlarged `scale` times."""
    n = min(n, len(conditioning))
    w, h = conditioning[0].size
    cell_w, gap = 2 * w * scale + 2, 6
    rows = (n + cols - 1) // cols
    grid = Image.new("RGB", (cols * cell_w + (cols - 1) * gap, rows * (h * scale) + (rows - 1) * gap), "white")
    for i in range(n):
        x, y = (i % cols) * (cell_w + gap), (i // cols) * (h * scale + gap)
        grid.paste(conditioning[i].resize((w * scale, h * scale), Image.Resampling.NEAREST), (x, y))
        grid.paste(decoded[i].resize((w * scale, h * scale), Image.Resampling.NEAREST), (x + w * scale + 2, y))
    return grid


def image_attributes(world_root) -> pd.DataFrame:
    """The toy world's generating attributes and split of every image, indexed by image_id (the entry's
    position in the Karpathy file, as pds.data.load_karpathy numbers them)."""
    root = resolve(world_root)
    ann = data.load_json(root / world.ANN_FILE)
    return pd.DataFrame([{**im["attributes"], "split": im["split"]} for im in ann["images"]]).rename_axis("image_id")


def split_arrays(world_root, split: str):
    """Images of one split as PIL list and uint8 tensor (N, H, W, 3), their first captions, and their
    generating attributes (a DataFrame, one row per image in the same order, the JUDGED columns)."""
    images, captions = data.load_dataset(world_root, ann_file=world.ANN_FILE)
    images = images[images.split == split].reset_index(drop=True)
    first = captions[captions.split == split].groupby("image_id").caption.first()
    prompts = [first[int(i)] for i in images.image_id]
    pil = [data.load_image(world_root, p) for p in images.path]
    labels = image_attributes(world_root).loc[images.image_id, list(JUDGED)].reset_index(drop=True)
    return pil, _as_uint8(pil), prompts, labels


def _match(pred: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """Percent of images whose predicted attributes equal the truth: shape and colour together (the model
    card's headline), the layout (count, arrangement and position together, where predicted), and each
    attribute alone."""
    if len(pred) != len(truth):
        raise ValueError(f"{len(pred)} predictions for {len(truth)} images.")
    hit = {name: pred[name].to_numpy() == truth[name].to_numpy() for name in pred.columns}
    def pct(x):
        return round(100 * float(np.mean(x)), 2)
    out = {"shape_colour": pct(hit["shape"] & hit["colour"])}
    if set(LAYOUT) <= set(hit):
        out["layout"] = pct(np.logical_and.reduce([hit[name] for name in LAYOUT]))
    return {**out, **{name: pct(h) for name, h in hit.items()}}


def evaluate_clip(model, preprocess, tokenizer, world_root, split: str = "test") -> dict:
    """Zero-shot retrieval on one split (percent), and the toy CLIP's zero-shot (shape, colour) accuracy
    on its real images."""
    images, captions = data.load_dataset(world_root, ann_file=world.ANN_FILE)
    images = images[images.split == split].reset_index(drop=True)
    captions = captions[captions.split == split].reset_index(drop=True)
    row = {int(i): r for r, i in enumerate(images.image_id)}
    pil = [data.load_image(world_root, p) for p in images.path]
    img_emb = embed_pil(model, preprocess, pil)
    with torch.inference_mode():
        txt_emb = torch.cat([model.encode_text(tokenizer(captions.caption[i:i + 1000].tolist())).float()
                             for i in range(0, len(captions), 1000)])
    text_image = np.array([row[int(i)] for i in captions.image_id])
    out = retrieval_recall(img_emb.numpy(), txt_emb.numpy(), text_image)
    out["r_mean"] = round(float(np.mean(list(out.values()))), 2)
    knobs = world.world_knobs(world_root)
    classes, weights = zero_shot_classifier(model, tokenizer, knobs.shapes, knobs.colours)
    truth = image_attributes(world_root).loc[images.image_id, ["shape", "colour"]].reset_index(drop=True)
    out["zero_shot"] = _match(pd.DataFrame(classify(img_emb, classes, weights), columns=["shape", "colour"]), truth)
    return out


def _as_uint8(images: list[Image.Image]) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in images]))  # (N, H, W, 3)


def decode(pipe, cond: torch.Tensor, prompts: list[str], num_inference_steps: int = 25,
           guidance_scale: float = 3.0, noise_level: int = 0, eta: float = 0.0, seed: int = 0,
           batch_size: int = 50) -> list[Image.Image]:
    """Decode embeddings `cond` (n, d) with captions `prompts`; image j uses a generator seeded seed + j, so
    an image does not depend on the batch it is in. eta is DDIM's (0 deterministic, 1 as stochastic as DDPM)."""
    out = []
    for i in range(0, len(prompts), batch_size):
        gens = [torch.Generator().manual_seed(seed + j) for j in range(i, min(i + batch_size, len(prompts)))]
        out += pipe(image_embeds=cond[i:i + batch_size], prompt=prompts[i:i + batch_size],
                    num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                    noise_level=noise_level, generator=gens, eta=eta).images
    return out


def evaluate_roundtrip(clip_model, preprocess, pipe, judge: AttributeJudge, pil, prompts, labels,
                       num_inference_steps: int = 25, guidance_scale: float = 3.0, noise_level: int = 0,
                       eta: float = 0.0, seed: int = 0):
    """Decode the toy-CLIP embeddings of `pil` (with their captions `prompts`), re-embed the outputs, and
    judge shape and colour against `labels`. Returns (figures, decoded PIL images, images per second); the
    speed stays out of `figures` so quality.json is reproducible."""
    cond = embed_pil(clip_model, preprocess, pil)  # (n, d)
    t0 = time.time()
    decoded = decode(pipe, cond, prompts, num_inference_steps, guidance_scale, noise_level, eta, seed)
    seconds = time.time() - t0
    out_emb = embed_pil(clip_model, preprocess, decoded)
    cos = F.cosine_similarity(out_emb, cond).numpy()  # (n,)
    c = F.normalize(cond, dim=-1)
    unrelated = (c @ c.T).numpy()[~np.eye(len(c), dtype=bool)]
    with torch.inference_mode():  # the VAE alone bounds what the decoder can draw
        x = to_unit_range(_as_uint8(pil))
        rec = pipe.vae.decode(pipe.vae.encode(x.to(pipe.vae.dtype)).latent_dist.mode()).sample
        rec = ((rec.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
    figures = {
        "n": len(pil), "num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale,
        "noise_level": noise_level, "eta": eta,
        "cosine_decoded_vs_conditioning": round(float(cos.mean()), 4),
        "cosine_unrelated_test_images": round(float(unrelated.mean()), 4),
        "judge_on_conditioning_images": _match(judge.predict(_as_uint8(pil)), labels),
        "judge_on_vae_reconstructions": _match(judge.predict(rec), labels),
        "judge_on_decoded_images": _match(judge.predict(_as_uint8(decoded)), labels),
    }
    return figures, decoded, len(pil) / seconds


def main(argv: list[str] | None = None) -> None:
    from pds.models import check_unclip_dim, clip_embed_dim, load_clip, load_unclip

    p = argparse.ArgumentParser(description="Measure the toy CLIP and toy unCLIP on the toy test split.")
    p.add_argument("--world", default="data/raw/toyworld")
    p.add_argument("--models", default="models/toyworld", help="folder holding toy-clip/ and toy-unclip/")
    p.add_argument("--n", type=int, default=200, help="images decoded in the round trip")
    p.add_argument("--split", default="test", choices=["test", "val"],
                   help="round-trip images (val: for choosing between decoders, so test stays unseen)")
    p.add_argument("--num-inference-steps", type=int, default=25)
    p.add_argument("--guidance-scale", type=float, default=3.0, help="best of 1, 3, 5, 8 on 100 val images")
    p.add_argument("--noise-level", type=int, default=0)
    p.add_argument("--eta", type=float, default=1.0,
                   help="DDIM eta (0 deterministic, 1 as stochastic as DDPM); compare on val with python -m pds.toy.diagnose")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-unclip", type=int, default=0, help="1: measure the CLIP only")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    world_root, models = resolve(args.world), resolve(args.models)
    model, preprocess, tokenizer = load_clip(f"local-dir:{models / 'toy-clip'}", device="cpu")
    report = {"clip": evaluate_clip(model, preprocess, tokenizer, world_root)}
    print("toy CLIP:", report["clip"])
    if not args.skip_unclip:
        pipe = load_unclip(str(models / "toy-unclip"), device="cpu")
        check_unclip_dim(clip_embed_dim(model), pipe)
        _, train_images, _, train_labels = split_arrays(world_root, "train")
        judge = train_judge(train_images, train_labels, seed=args.seed,
                            judged=world.world_knobs(world_root).labels(JUDGED))
        pil, images, prompts, labels = split_arrays(world_root, args.split)
        report[f"judge_on_real_{args.split}_images"] = _match(judge.predict(images), labels)
        pil, prompts, labels = pil[:args.n], prompts[:args.n], labels[:args.n]
        figures, decoded, speed = evaluate_roundtrip(model, preprocess, pipe, judge, pil, prompts, labels,
                                              num_inference_steps=args.num_inference_steps,
                                              guidance_scale=args.guidance_scale, noise_level=args.noise_level,
                                              eta=args.eta, seed=args.seed)
        report["unclip_roundtrip"] = figures
        print(f"judge on real {args.split} images:", report[f"judge_on_real_{args.split}_images"])
        print("toy unCLIP round trip:", figures, f"({speed:.1f} images/s)")
        data.save_png(models / "unclip_roundtrip.png", roundtrip_grid(pil, decoded))
    data.save_json(models / "quality.json", report)


if __name__ == "__main__":
    main()
