"""A contrastive image-text student, trained on a set of pairs and scored on a retrieval split: the students of
the evaluate stage (`pds.evaluate`) and the experts and unrolled students of the tm stage (`pds.tm`).

The field's dual encoder (MTT-VL, LoRS): an image encoder -- or, under the paper's protocol, a frozen image
embedding -- and a text projection head on frozen caption features, both sides L2-normalised, cosine logits /
0.07; symmetric InfoNCE, or LoRS's weighted BCE against soft targets; SGD with momentum 0.9, weight decay 5e-4.
Each student is evaluated on val and test along the way with image-text recall@1/5/10 both ways, computed as
the field computes it (BLIP `itm_eval`).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

TEMPERATURE = 0.07
RECALLS = ("IR@1", "IR@5", "IR@10", "TR@1", "TR@5", "TR@10")
METRICS = RECALLS + ("r_mean",)


# ----------------------------------------------------------------------------------------------------
# retrieval metrics


def recall_at_k(sim: np.ndarray, txt2img: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Image-text retrieval recall in percent, as the field computes it (BLIP `itm_eval`).

    sim (n_img, n_txt): score of image i against caption j; txt2img (n_txt,): the image of each caption.
    TR@K (image -> text): an image is a hit when any of its captions ranks < K among all captions.
    IR@K (text -> image): a caption is a hit when its image ranks < K among all images.
    r_mean = mean of the six recalls. Ties count against the query (a true item tied with a wrong one ranks
    behind it), so a collapsed model that scores everything equally gets 0, not 100.
    """
    sim = np.asarray(sim)
    txt2img = np.asarray(txt2img)
    if sim.ndim != 2 or sim.size == 0:
        raise ValueError(f"sim must be a non-empty (n_img, n_txt) matrix, got shape {sim.shape}.")
    n_img, n_txt = sim.shape
    if txt2img.shape != (n_txt,):
        raise ValueError(f"txt2img has shape {txt2img.shape}; expected ({n_txt},), one image per caption.")
    if not np.issubdtype(txt2img.dtype, np.integer) or txt2img.min() < 0 or txt2img.max() >= n_img:
        raise ValueError(f"txt2img must hold image indices in [0, {n_img}); a caption points to no image.")
    n_caps = np.bincount(txt2img, minlength=n_img)
    if (n_caps == 0).any():
        raise ValueError(f"{int((n_caps == 0).sum())} images have no caption (e.g. image "
                         f"{int(np.argmin(n_caps))}); every test image needs at least one.")
    if not np.isfinite(sim).all():
        raise ValueError("sim contains NaN or inf; the student diverged (lower the learning rate).")
    cols = np.arange(n_txt)
    true = sim[txt2img, cols]  # (n_txt,) score of each caption with its own image
    # IR: rank of the true image = number of other images scoring >= it
    ir_rank = (sim >= true[None, :]).sum(axis=0) - 1  # (n_txt,)
    # TR: rank of an image = number of non-matching captions scoring >= its best matching caption
    best = np.full(n_img, -np.inf, dtype=np.float64)
    np.maximum.at(best, txt2img, true.astype(np.float64))
    tr_rank = np.zeros(n_img, dtype=np.int64)
    for lo in range(0, n_img, 256):  # chunks bound the (chunk, n_txt) boolean matrix on COCO
        hi = min(lo + 256, n_img)
        tr_rank[lo:hi] = (sim[lo:hi] >= best[lo:hi, None]).sum(axis=1)
    own_ge = np.bincount(txt2img, weights=(true >= best[txt2img]), minlength=n_img)  # own captions counted
    tr_rank = tr_rank - own_ge.astype(np.int64)
    out = {}
    for k in ks:
        out[f"IR@{k}"] = 100.0 * float((ir_rank < k).mean())
    for k in ks:
        out[f"TR@{k}"] = 100.0 * float((tr_rank < k).mean())
    out["r_mean"] = float(np.mean([out[f"IR@{k}"] for k in ks] + [out[f"TR@{k}"] for k in ks]))
    return out


# ----------------------------------------------------------------------------------------------------
# the student


class ProjectionHead(nn.Module):
    """The field's text projection (MTT-VL / LoRS `ProjectionHead`): Linear -> GELU -> Linear -> Dropout,
    plus the first Linear's output as a residual, then LayerNorm. (B, in_dim) -> (B, out_dim)."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.1):
        super().__init__()
        self.projection = nn.Linear(in_dim, out_dim)
        self.gelu = nn.GELU()
        self.fc = nn.Linear(out_dim, out_dim)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(out_dim)

    def forward(self, x):
        projected = self.projection(x)  # (B, out_dim)
        x = self.dropout(self.fc(self.gelu(projected)))
        return self.layer_norm(x + projected)


def pixel_stats(mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """An encoder's (mean, std) on the uint8 scale, (1, 3, 1, 1) each: (images.float() - mean) / std is its input."""
    return (torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255,
            torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255)


class Student(nn.Module):
    """Image encoder + text projection head; text comes in as frozen-encoder features (B, d_t).

    Images come in as uint8 (B, 3, S, S) and are scaled to [0, 1] and normalised with (mean, std) here, so
    data can stay compact in memory. With mean = std = None the "images" are already image embeddings
    (B, D) of a frozen encoder (the paper's protocol) and pass through `image_encoder` (nn.Identity) as they
    are. Both sides leave L2-normalised, no image projection (the field's).

    channels_last: the encoder's weights and the pixels it sees are in channels-last layout. Speed only: the same arithmetic in another order, so results
    agree within float rounding; oneDNN's convolutions and pooling are faster that way on the CPU
    (`make bench`, students)."""

    def __init__(self, image_encoder: nn.Module, text_head: nn.Module, mean: Sequence[float] | None,
                 std: Sequence[float] | None, channels_last: bool = False):
        super().__init__()
        self.image_encoder = image_encoder
        self.text_head = text_head
        mean, std = pixel_stats(mean, std) if mean is not None else (None, None)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)  # the 4-d weights; `.to(device)` later keeps the layout

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:  # (B, 3, S, S) uint8 or (B, D) -> (B, D)
        x = images.float() if self.mean is None else (images.float() - self.mean) / self.std
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return F.normalize(self.image_encoder(x), dim=-1)

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:  # (B, d_t) -> (B, D)
        return F.normalize(self.text_head(text), dim=-1)

    def forward(self, images, text, temperature: float = TEMPERATURE) -> torch.Tensor:
        """(B_i, B_t) logits: cosine similarity / temperature."""
        return self.encode_image(images) @ self.encode_text(text).T / temperature


def contrastive_loss(logits: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE on (B, B) logits whose diagonal holds the matching pairs: the mean of the
    image->text and text->image cross-entropies."""
    if logits.ndim != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"logits must be a square (B, B) matrix of matching pairs, got {tuple(logits.shape)}.")
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def wbce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """LoRS's weighted BCE on (B, B) logits against soft targets (silicx/LoRS_Distill
    `src/similarity_mining.py`, MultilabelContrastiveLoss `WBCE`): elementwise BCE of sigmoid(logits),
    averaged separately over the positive (target > 0.5) and the negative entries, then the two means
    averaged, so the B positives weigh as much as the B^2 - B negatives. log-sigmoid replaces the
    reference's log(p + 1e-6): the same loss without the floor at |logit| > 14."""
    loss = -(target * F.logsigmoid(logits) + (1 - target) * F.logsigmoid(-logits))
    pos = (target > 0.5).detach()
    zero = torch.zeros((), dtype=loss.dtype)
    # exact means (the reference adds 1e-6 to the counts instead; the same unless a side is empty)
    pos_mean = torch.where(pos, loss, zero).sum() / pos.sum().clamp_min(1)
    neg_mean = torch.where(~pos, loss, zero).sum() / (~pos).sum().clamp_min(1)
    return (pos_mean + neg_mean) / 2


# ----------------------------------------------------------------------------------------------------
# pairs to train on, a split to retrieve on


@dataclass
class PairSet:
    """Training pairs: pair k shows images[image_index[k]] with text target text[k]."""

    images: torch.Tensor  # (n_pool, 3, S, S) uint8, or (n_pool, D) frozen image embeddings (paper protocol)
    image_index: np.ndarray  # (N,) int64 rows of images
    text: np.ndarray  # (N, d_t) float32 text targets in the student's text-feature space
    # (N, N) soft targets between the pairs (LoRS's learned similarity): the student then trains with LoRS's
    # WBCE loss on each batch's block, as LoRS evaluates its sets; None: InfoNCE (identity targets)
    similarity: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.image_index)


@dataclass
class RetrievalSet:
    """A val or test split: caption j belongs to image txt2img[j]."""

    images: torch.Tensor  # (n_img, 3, S, S) uint8, or (n_img, D) frozen image embeddings (paper protocol)
    text: np.ndarray  # (n_txt, d_t) float32 caption features
    txt2img: np.ndarray  # (n_txt,) int64


# ----------------------------------------------------------------------------------------------------
# training and scoring one student


@torch.inference_mode()
def embed_split(student: Student, split: RetrievalSet, batch_size: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised image (n_img, D) and text (n_txt, D) embeddings of a split, on the student's device."""
    device = next((t.device for t in [*student.parameters(), *student.buffers()]), torch.device("cpu"))
    img = torch.cat([student.encode_image(split.images[lo:lo + batch_size].to(device))
                     for lo in range(0, len(split.images), batch_size)])
    txt = student.encode_text(torch.from_numpy(split.text).to(device))
    return img.float(), txt.float()


def evaluate_student(student: Student, split: RetrievalSet, batch_size: int = 100,
                     top: int = 0) -> tuple[dict[str, float], np.ndarray | None]:
    """Recall metrics of `student` on a split; with top > 0 also each caption's `top` best images
    (n_txt, top) for showing retrieval examples."""
    was_training = student.training
    student.eval()
    img, txt = embed_split(student, split, batch_size)
    student.train(was_training)
    # torch, not numpy, multiplies: it keeps to torch's thread setting (numpy's BLAS would start its own)
    sim = img @ txt.T  # (n_img, n_txt) cosine
    ranked = torch.topk(sim, min(top, len(img)), dim=0).indices.T.cpu().numpy() if top else None
    return recall_at_k(sim.cpu().numpy(), split.txt2img), ranked


@dataclass
class TrainResult:
    history: pd.DataFrame  # one row per (epoch, split): loss and the metrics
    test_top: np.ndarray | None  # (n_txt, 5) test retrieval at the val-selected epoch


def epoch_order(image_index: np.ndarray, gen: torch.Generator, one_per_image: bool) -> torch.Tensor:
    """Pair positions of one epoch: a shuffled pass over every pair, or (one_per_image) every image once
    with one of its pairs drawn at random, shuffled."""
    perm = torch.randperm(len(image_index), generator=gen)
    if not one_per_image:
        return perm
    _, first = np.unique(np.asarray(image_index)[perm.numpy()], return_index=True)  # a random pair per image
    chosen = perm[torch.from_numpy(first)]
    return chosen[torch.randperm(len(chosen), generator=gen)]


def train_student(encoder, train: PairSet, val: RetrievalSet, test: RetrievalSet, epochs: int, lr: float,
                  lr_image: float, batch_size: int, eval_every: int, seed: int, momentum: float = 0.9,
                  weight_decay: float = 5e-4, device: str = "cpu", eval_batch_size: int = 100,
                  one_per_image: bool = False, progress: bool = False, lr_step: int = 0,
                  channels_last: bool = True) -> TrainResult:
    """Train one student on `train` and evaluate it on val and test at epoch 0, every `eval_every` epochs
    and at the last one.

    encoder: a fresh `pds.models.ImageEncoder` (trained in place; the field's protocol), or None when the
    images of train / val / test are already the embeddings (n, D) of a frozen encoder (the paper's protocol:
    only the text head is trained). The text head maps d_t to the image feature size; SGD with `lr` for the
    head and `lr_image` for the image encoder (lr_image = 0 freezes its weights), both x0.1 for the epochs
    after `lr_step` (0: epochs // 2). An epoch is one shuffled pass over the pairs in batches of
    `batch_size` or, with one_per_image, over the images, each with one of its pairs drawn at random
    (`epoch_order`). Pairs with soft targets (train.similarity, LoRS's sets) train with `wbce_loss` on each
    batch's block of them, every other set with InfoNCE (`contrastive_loss`). channels_last: see `Student`.

    On the CPU the student trains single-threaded (restored afterwards): small models gain little from a
    second thread, and results then do not depend on the thread count.
    """
    threads = torch.get_num_threads()
    if str(device) == "cpu":
        torch.set_num_threads(1)
    try:
        return _train_student(encoder, train, val, test, epochs, lr, lr_image, batch_size, eval_every, seed,
                              momentum, weight_decay, device, eval_batch_size, one_per_image, progress, lr_step,
                              channels_last)
    finally:
        torch.set_num_threads(threads)


def _train_student(encoder, train, val, test, epochs, lr, lr_image, batch_size, eval_every, seed, momentum,
                   weight_decay, device, eval_batch_size, one_per_image, progress, lr_step, channels_last) -> TrainResult:
    if len(train) == 0:
        raise ValueError("the training set is empty; nothing to train the student on.")
    if epochs < 1 or eval_every < 1 or batch_size < 1:
        raise ValueError(f"epochs={epochs}, eval_every={eval_every}, batch_size={batch_size} must all be >= 1.")
    if train.text.shape[1] != val.text.shape[1]:
        raise ValueError(f"training text targets are {train.text.shape[1]}-d but caption features are "
                         f"{val.text.shape[1]}-d; both must come from the same text encoder.")
    if train.similarity is not None and np.shape(train.similarity) != (len(train), len(train)):
        raise ValueError(f"the soft targets are {np.shape(train.similarity)} for {len(train)} pairs; they must be "
                         f"({len(train)}, {len(train)}), one row and column per pair (re-run the tm stage).")
    frozen = encoder is None
    if frozen != (train.images.ndim == 2) or frozen != (val.images.ndim == 2):
        raise ValueError("with encoder=None the images must be frozen embeddings (n, D), otherwise pixels "
                         "(n, 3, S, S); see frozen_embeddings.")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    if frozen:
        head = ProjectionHead(train.text.shape[1], train.images.shape[1])
        student = Student(nn.Identity(), head, None, None).to(device).train()
        groups = [{"params": head.parameters(), "lr": lr}]  # as released: the head is all the optimiser sees
    else:
        head = ProjectionHead(train.text.shape[1], encoder.num_features)
        student = Student(encoder.model, head, encoder.mean, encoder.std, channels_last).to(device).train()
        groups = [{"params": head.parameters(), "lr": lr}]
        if lr_image > 0:
            groups.append({"params": encoder.model.parameters(), "lr": lr_image})
        else:
            encoder.model.requires_grad_(False)
    opt = torch.optim.SGD(groups, momentum=momentum, weight_decay=weight_decay)
    step = lr_step or epochs // 2
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[step] if 0 < step < epochs else [], gamma=0.1)
    text = torch.from_numpy(np.ascontiguousarray(train.text, dtype=np.float32))
    index = torch.from_numpy(np.array(train.image_index, dtype=np.int64))  # a copy: the table may be read-only
    soft = None if train.similarity is None else torch.tensor(np.asarray(train.similarity, np.float32), device=device)

    rows, best_val, test_top = [], -np.inf, None
    loss_sum, n_seen = float("nan"), 0
    for epoch in tqdm(range(epochs + 1), desc="epochs", unit="ep", disable=not progress, leave=False):
        if epoch > 0:
            perm = epoch_order(train.image_index, gen, one_per_image)
            loss_sum, n_seen = 0.0, 0
            for lo in range(0, len(perm), batch_size):
                b = perm[lo:lo + batch_size]
                logits = student(train.images[index[b]].to(device), text[b].to(device))
                loss = contrastive_loss(logits) if soft is None else wbce_loss(logits, soft[b][:, b])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += loss.item() * len(b)
                n_seen += len(b)
            sched.step()
        if epoch % eval_every == 0 or epoch == epochs:
            val_m, _ = evaluate_student(student, val, eval_batch_size)
            better = val_m["r_mean"] > best_val  # strictly better: ties keep the earlier epoch
            test_m, top = evaluate_student(student, test, eval_batch_size, top=5 if better else 0)
            if better:
                best_val, test_top = val_m["r_mean"], top
            loss = loss_sum / n_seen if n_seen else float("nan")
            rows.append({"epoch": epoch, "split": "val", "loss": loss, **val_m})
            rows.append({"epoch": epoch, "split": "test", "loss": loss, **test_m})
            if not np.isfinite(loss) and epoch > 0:
                raise ValueError(f"training diverged at epoch {epoch} (loss {loss}); lower lr / lr_image.")
    return TrainResult(pd.DataFrame(rows), test_top)


@torch.no_grad()
def frozen_embeddings(encoder, pixels: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The paper's image side: a frozen pretrained encoder in eval mode (BatchNorm statistics untouched) maps
    uint8 images (n, 3, S, S) to their embeddings (n, D) float32 -- timm's 1000 ImageNet logits on the real
    path, the toy encoders' features on the toy world."""
    model = encoder.model.eval()
    mean, std = pixel_stats(encoder.mean, encoder.std)
    out = [model((pixels[lo:lo + batch_size].float() - mean) / std) for lo in range(0, len(pixels), batch_size)]
    return torch.cat(out).float() if out else torch.zeros((0, encoder.num_features))
