"""The optimisation-based distillers PDS is compared with, at toy scale: expert trajectories, MTT-VL
trajectory matching and LoRS (trajectory matching plus a learned low-rank soft similarity matrix);
`python -m pds.tm experts|distill` runs them on the repository's artefacts."""

# Written from reading (not copying) princetonvisualai/multimodal_dataset_distillation (buffer.py, distill.py)
# and silicx/LoRS_Distill (buffer.py, distill_tesla_lors.py, src/similarity_mining.py, sh/*.sh).

import argparse
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.func import functional_call

from pds import artifacts, data, paths
from pds.contrastive import TEMPERATURE, PairSet, ProjectionHead, contrastive_loss, epoch_order, wbce_loss

METHODS = ("tm", "lors")  # tm: MTT-VL (trajectory matching), lors: + learned low-rank similarity
EXPERTS_NPY, EXPERTS_JSON = "experts.npy", "experts.json"

# ----------------------------------------------------------------------------------------------------
# the student as a function of a flat parameter vector


class DualEncoder(nn.Module):
    """Image encoder + text projection head on *normalised* float pixels: (B, 3, S, S), (B, d_t) -> (B, B)
    logits = cosine / temperature (the field's student, `pds.contrastive.Student`, whose parameter names
    `image_encoder.*` / `text_head.*` it shares). Synthetic pixels live in the normalised space, as in the
    references, so their learning rate means the same as there."""

    def __init__(self, image_encoder: nn.Module, text_head: nn.Module, temperature: float = TEMPERATURE):
        super().__init__()
        self.image_encoder = image_encoder
        self.text_head = text_head
        self.temperature = temperature

    def forward(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        img = F.normalize(self.image_encoder(images), dim=-1)  # (B, D)
        txt = F.normalize(self.text_head(text), dim=-1)  # (B, D)
        return img @ txt.T / self.temperature


@dataclass(frozen=True)
class Layout:
    """Where each trainable parameter sits in the flat vector: image encoder first, then text head."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    n_image_tensors: int  # the first n_image_tensors names belong to the image encoder

    @property
    def numels(self) -> list[int]:
        return [math.prod(s) for s in self.shapes]

    @property
    def n_image(self) -> int:  # parameter elements of the image encoder
        return sum(self.numels[:self.n_image_tensors])

    @property
    def size(self) -> int:
        return sum(self.numels)


def check_functional(module: nn.Module) -> None:
    """Refuse networks with BatchNorm: its running statistics are buffers updated in place, outside the
    unrolled parameter vector, so a matched trajectory would not be a function of the parameters alone."""
    for name, m in module.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            raise ValueError(f"layer {name or type(module).__name__} is a BatchNorm ({type(m).__name__}); trajectory "
                             "matching needs a norm without running statistics: distil with the convnet "
                             "(GroupNorm), as the references distil with NFNet.")


def build_network(image_encoder: nn.Module, num_features: int, text_dim: int, dropout: float = 0.1) -> DualEncoder:
    """A DualEncoder around `image_encoder` with a fresh ProjectionHead(text_dim -> num_features)."""
    check_functional(image_encoder)
    return DualEncoder(image_encoder, ProjectionHead(text_dim, num_features, dropout))


def param_layout(net: DualEncoder) -> Layout:
    """The flat layout of a DualEncoder's parameters (image encoder's, then text head's, in module order)."""
    img = list(net.image_encoder.named_parameters(prefix="image_encoder"))
    txt = list(net.text_head.named_parameters(prefix="text_head"))
    return Layout(tuple(n for n, _ in img + txt), tuple(tuple(p.shape) for _, p in img + txt), len(img))


def flatten_params(net: DualEncoder) -> torch.Tensor:
    """The parameters of `net` as one detached (P,) vector in `param_layout` order."""
    return torch.cat([p.detach().reshape(-1) for p in net.image_encoder.parameters()]
                     + [p.detach().reshape(-1) for p in net.text_head.parameters()])


def params_dict(layout: Layout, image_flat: torch.Tensor, text_flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Views of (P_img,) and (P_txt,) flat vectors shaped as the named parameters, for functional_call."""
    numels = layout.numels
    k = layout.n_image_tensors
    pieces = list(torch.split(image_flat, numels[:k])) + list(torch.split(text_flat, numels[k:]))
    return {n: p.view(s) for n, p, s in zip(layout.names, pieces, layout.shapes, strict=True)}


def normalise(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> float32 (x / 255 - mean) / std, the encoder's input."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (images.float() / 255 - m) / s


def denormalise(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalised float (B, 3, S, S) -> uint8, rounded and clipped to [0, 255] (what a PNG can hold)."""
    m = torch.tensor(mean, dtype=pixels.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=pixels.dtype).view(1, 3, 1, 1)
    return ((pixels.detach() * s + m) * 255).round().clamp(0, 255).to(torch.uint8)


# ----------------------------------------------------------------------------------------------------
# expert trajectories


@dataclass
class Experts:
    """Expert trajectories: the flattened trainable parameters after each epoch (0 = initialisation)."""

    params: np.ndarray  # (E, T+1, P) float32: [image encoder | text head] in param_layout order
    n_image_params: int  # P_img: the image encoder's share of P
    encoder: str  # architecture name (pds.models.load_image_encoder)
    text_dim: int  # d_t, the text head's input
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    losses: np.ndarray  # (E, T) mean InfoNCE of each epoch
    settings: dict = field(default_factory=dict)

    @property
    def n_experts(self) -> int:
        return self.params.shape[0]

    @property
    def epochs(self) -> int:
        return self.params.shape[1] - 1


def _seeds(seed: int, n: int) -> list[int]:
    """n independent seeds derived from one (SeedSequence), one per expert."""
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(n)]


def train_expert(load_encoder: Callable[[], object], train: PairSet, epochs: int, seed: int, lr_image: float = 0.1,
                 lr_text: float = 0.1, batch_size: int = 128, momentum: float = 0.0, weight_decay: float = 0.0,
                 one_per_image: bool = True, dropout: float = 0.1) -> tuple[np.ndarray, list[float], Layout, object]:
    """One expert (see `train_experts`): (trajectory (T+1, P) float32, per-epoch losses, layout, encoder)."""
    text = torch.from_numpy(np.ascontiguousarray(train.text, dtype=np.float32))  # (N, d_t)
    index = torch.from_numpy(np.array(train.image_index, dtype=np.int64))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # random-init encoders, the head and dropout differ per expert
        enc = load_encoder()
        net = build_network(enc.model, enc.num_features, text.shape[1], dropout).train()
        opt = torch.optim.SGD([{"params": net.image_encoder.parameters(), "lr": lr_image},
                               {"params": net.text_head.parameters(), "lr": lr_text}],
                              momentum=momentum, weight_decay=weight_decay)
        gen = torch.Generator().manual_seed(seed)
        snaps, losses = [flatten_params(net).numpy().copy()], []
        for _ in range(epochs):
            perm = epoch_order(train.image_index, gen, one_per_image)
            total, seen = 0.0, 0
            for lo in range(0, len(perm), batch_size):
                b = perm[lo:lo + batch_size]
                if len(b) < 2:  # a one-pair batch has no negatives: InfoNCE is 0 and says nothing
                    continue
                x = normalise(train.images[index[b]], enc.mean, enc.std)
                loss = contrastive_loss(net(x, text[b]))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(b)
                seen += len(b)
            losses.append(total / max(seen, 1))
            if not np.isfinite(losses[-1]):
                raise ValueError(f"an expert diverged (loss {losses[-1]}); lower lr_image / lr_text.")
            snaps.append(flatten_params(net).numpy().copy())
    return np.stack(snaps).astype(np.float32), losses, param_layout(net), enc


def _expert_in_worker(args):
    torch.set_num_threads(1)
    traj, losses, layout, enc = train_expert(*args[0], **args[1])
    return traj, losses, layout, (enc.name, enc.image_size, enc.mean, enc.std)


def train_experts(load_encoder: Callable[[], object], train: PairSet, n_experts: int, epochs: int,
                  lr_image: float = 0.1, lr_text: float = 0.1, batch_size: int = 128, momentum: float = 0.0,
                  weight_decay: float = 0.0, one_per_image: bool = True, dropout: float = 0.1,
                  seed: int = 0, workers: int = 1) -> Experts:
    """Train `n_experts` students on the full training set and record their trajectories.

    load_encoder() returns a fresh `pds.models.ImageEncoder` (its weights: the experts' common start, as
    the references start from ImageNet weights); each expert gets its own text head, data order and dropout
    from its own seed. Protocol of the references' `buffer.py`: trainable image encoder, frozen text
    features `train.text` (N, d_t), ProjectionHead, symmetric InfoNCE at temperature 0.07, SGD with
    lr_image / lr_text (defaults 0.1 / 0.1, momentum 0, weight decay 0, constant lr, batch 128). An epoch is
    every pair (or, one_per_image, every image with one of its captions; `pds.contrastive.epoch_order`).
    Deterministic from `seed` (the global torch RNG is left as it was); workers > 1 trains experts in that
    many single-threaded spawned processes (load_encoder must then be picklable, e.g. a functools.partial),
    with the same result as workers = 1 run single-threaded. Returns Experts, params (E, T+1, P).
    """
    if len(train) == 0:
        raise ValueError("the training set is empty; experts need the full training set.")
    if n_experts < 1 or epochs < 1 or batch_size < 2:
        raise ValueError(f"n_experts={n_experts}, epochs={epochs} must be >= 1 and batch_size={batch_size} >= 2.")
    kwargs = {"lr_image": lr_image, "lr_text": lr_text, "batch_size": batch_size, "momentum": momentum,
              "weight_decay": weight_decay, "one_per_image": bool(one_per_image), "dropout": dropout}
    seeds = _seeds(seed, n_experts)
    if workers <= 1:
        runs = [train_expert(load_encoder, train, epochs, s, **kwargs) for s in seeds]
        runs = [(t, lo, la, (e.name, e.image_size, e.mean, e.std)) for t, lo, la, e in runs]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: forking a process whose torch thread pools already ran can deadlock
        with ProcessPoolExecutor(min(workers, n_experts), mp_context=multiprocessing.get_context("spawn")) as pool:
            runs = list(pool.map(_expert_in_worker, [((load_encoder, train, epochs, s), kwargs) for s in seeds]))
    layout = runs[0][2]
    name, image_size, mean, std = runs[0][3]
    settings = {**kwargs, "seed": seed, "n_train_pairs": len(train)}
    return Experts(np.stack([r[0] for r in runs]), layout.n_image, name, int(np.asarray(train.text).shape[1]),
                   int(image_size), tuple(float(v) for v in mean), tuple(float(v) for v in std),
                   np.asarray([r[1] for r in runs], dtype=np.float64), settings)


def save_experts(out_dir, experts: Experts, made_from=()) -> Path:
    """Write `out_dir/experts.npy` (E, T+1, P) float32 and `experts.json` (everything else), atomically, then
    manifest.json recording `made_from` (the opened text features)."""
    out = Path(out_dir)
    artifacts.begin(out)
    data.save_npy(out / EXPERTS_NPY, experts.params.astype(np.float32))
    meta = {"encoder": experts.encoder, "n_experts": experts.n_experts, "epochs": experts.epochs,
            "n_params": int(experts.params.shape[2]), "n_image_params": int(experts.n_image_params),
            "text_dim": experts.text_dim, "image_size": experts.image_size, "mean": list(experts.mean),
            "std": list(experts.std), "losses": np.round(experts.losses, 6).tolist(), "settings": experts.settings}
    data.save_json(out / EXPERTS_JSON, meta)
    artifacts.write_manifest(out, "experts", [EXPERTS_NPY, EXPERTS_JSON], made_from)
    return out


def load_experts(out_dir) -> Experts:
    """Read what `save_experts` wrote (one finished run); the array's shape is checked against the json."""
    d = Path(out_dir)
    artifacts.open_artifact(d, "experts")
    meta = data.load_json(d / EXPERTS_JSON)
    params = data.load_npy(d / EXPERTS_NPY)
    want = (meta["n_experts"], meta["epochs"] + 1, meta["n_params"])
    if params.shape != want:
        raise ValueError(f"{d / EXPERTS_NPY} has shape {params.shape} but {EXPERTS_JSON} says {want}; re-run experts.")
    return Experts(params, int(meta["n_image_params"]), meta["encoder"], int(meta["text_dim"]),
                   int(meta["image_size"]), tuple(meta["mean"]), tuple(meta["std"]),
                   np.asarray(meta["losses"], dtype=np.float64), meta.get("settings", {}))


# ----------------------------------------------------------------------------------------------------
# LoRS soft targets


class LowRankSimilarity(nn.Module):
    """LoRS's learned similarity S = diag(a) + (alpha / rank) L R^T over the M synthetic pairs, as
    silicx/LoRS_Distill `src/similarity_mining.py` (LowRankSimilarityGenerator): a = 1, L ~ N(0, 1),
    R = 0 at the start, so S starts as the identity, InfoNCE's hard targets."""

    def __init__(self, n: int, rank: int, alpha: float):
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank={rank} must be >= 1.")
        self.alpha, self.rank = float(alpha), int(rank)
        self.diag = nn.Parameter(torch.ones(n))
        self.left = nn.Parameter(torch.randn(n, rank))
        self.right = nn.Parameter(torch.zeros(n, rank))

    def forward(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """The (b, b) block of S for pairs `idx` (all M pairs when None)."""
        a, left, right = (self.diag, self.left, self.right) if idx is None else \
            (self.diag[idx], self.left[idx], self.right[idx])
        return torch.diag(a) + left @ right.T * (self.alpha / self.rank)


# ----------------------------------------------------------------------------------------------------
# trajectory matching


def unroll(net: DualEncoder, layout: Layout, start: torch.Tensor, images: torch.Tensor, text: torch.Tensor,
           lrs: torch.Tensor, batches: Sequence[torch.Tensor],
           similarity: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """N plain-SGD student steps from `start` (P,) on minibatches `batches` of the synthetic pairs
    images (M, 3, S, S) / text (M, d_t), keeping the graph (create_graph) so the matching loss reaches the
    data, the lrs (2,) = (image lr, text lr) and the similarity. similarity(idx) -> (b, b) soft targets
    switches InfoNCE to LoRS's WBCE. Returns the final (image part (P_img,), text part (P_txt,))."""
    img = start[:layout.n_image].detach().requires_grad_(True)
    txt = start[layout.n_image:].detach().requires_grad_(True)
    for idx in batches:
        logits = functional_call(net, params_dict(layout, img, txt), (images[idx], text[idx]))
        loss = contrastive_loss(logits) if similarity is None else wbce_loss(logits, similarity(idx))
        g_img, g_txt = torch.autograd.grad(loss, (img, txt), create_graph=True)
        img = img - lrs[0] * g_img
        txt = txt - lrs[1] * g_txt
    return img, txt


def matching_loss(net: DualEncoder, layout: Layout, start: torch.Tensor, target: torch.Tensor,
                  images: torch.Tensor, text: torch.Tensor, lrs: torch.Tensor, batches: Sequence[torch.Tensor],
                  similarity: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  merge_branches: bool = False) -> torch.Tensor:
    """The normalised trajectory-matching loss of one expert segment, start = θ*_t, target = θ*_{t+K} (P,):
    ‖θ̂_img − θ*_img‖² / ‖θ*_t,img − θ*_img‖² + the same for the text head, as both references sum the two
    branches (`distill.py`; LoRS `distill_tesla_lors.py`); merge_branches: one ratio of the summed norms
    (LoRS's --merge_loss_branches). A scalar, differentiable w.r.t. images, text, lrs and the similarity."""
    img, txt = unroll(net, layout, start, images, text, lrs, batches, similarity)
    n = layout.n_image
    num_i, num_t = ((img - target[:n]) ** 2).sum(), ((txt - target[n:]) ** 2).sum()
    den_i, den_t = ((start[:n] - target[:n]) ** 2).sum(), ((start[n:] - target[n:]) ** 2).sum()
    if merge_branches:
        return (num_i + num_t) / (den_i + den_t)
    return num_i / den_i + num_t / den_t


@dataclass
class MatchSettings:
    """Trajectory-matching hyper-parameters, named after the references' flags (mission_anchors §2.5).

    Defaults are the toy world's (a pilot on 2 CPU cores); the references' Flickr30k values in brackets
    (MTT-VL README; LoRS sh/distill_flickr_lors_100.sh)."""

    iterations: int = 150  # --Iteration [MTT-VL 50000 default, LoRS 3000]
    syn_steps: int = 8  # N student steps per iteration (--syn_steps) [8]
    expert_epochs: int = 1  # K: the target is K expert epochs after the start (--expert_epochs) [1]
    max_start_epoch: int = 2  # start epoch t drawn from 0 .. max_start_epoch - 1 (--max_start_epoch) [2]
    mini_batch: int = 20  # synthetic pairs per student step (--mini_batch_size) [MTT-VL 100, LoRS 20]
    lr_img: float = 1000.0  # SGD lr of the (normalised) synthetic pixels [MTT-VL 1000, LoRS 100]
    # SGD lr of the synthetic text embeddings [1000 / 100 on BERT CLS features, norm ~15; MiniLM's are
    # unit-norm and moved by 13x their norm in 40 iterations at 100]
    lr_txt: float = 1.0
    # SGD lr of the *log* student lrs: 1 moves them as the references' 1e-2 on the raw lr does at lr = 0.1
    # (d lr = lr^2 * d log-lr-step) [--lr_lr 1e-2]
    lr_lr: float = 1.0
    init_lr_image: float = 0.1  # student lrs at the start (--lr_teacher_img / --lr_teacher_txt) [0.1]
    init_lr_text: float = 0.1
    momentum: float = 0.5  # SGD momentum of every distilled quantity [0.5]
    rank: int = 10  # LoRS: rank of the similarity's low-rank part (--sim_rank) [10]
    alpha: float = 3.0  # LoRS: scale alpha of L R^T (--alpha) [3]
    lr_sim: float = 1.0  # LoRS: SGD lr of the similarity parameters (--lr_sim) [10; diverges on tiny sets]
    merge_branches: bool = False  # one normalised loss over image + text parameters (LoRS flag) [False]
    dropout: float = 0.1  # the text head's dropout during the unroll (train mode, as the references)


@dataclass
class Distilled:
    """A distilled set of M image-text pairs and what was learned with it."""

    method: str  # tm | lors
    images: np.ndarray  # (M, 3, S, S) uint8: the pixels denormalised, rounded and clipped
    pixels: np.ndarray  # (M, 3, S, S) float32 learned pixels in the encoder's normalised space
    text: np.ndarray  # (M, d_t) float32 learned text embeddings (student text-feature space)
    lr_image: float  # learned student learning rates (to train students on the set, as the references)
    lr_text: float
    similarity: np.ndarray | None  # (M, M) float32 soft targets (LoRS), None for MTT-VL (identity)
    init_pairs: np.ndarray  # (M,) positions in the training PairSet the pairs started from
    loss: np.ndarray  # (iterations,) matching loss of each iteration
    settings: dict


def check_matching(experts: Experts, layout: Layout, n_train: int, n_pairs: int, s: MatchSettings) -> None:
    """One clear ValueError for each setting that cannot work."""
    if experts.params.ndim != 3 or experts.params.shape[2] != layout.size or experts.n_image_params != layout.n_image:
        raise ValueError(f"the expert trajectories hold {experts.params.shape[-1]} parameters "
                         f"({experts.n_image_params} image) but a {experts.encoder} student with a {experts.text_dim}-d "
                         f"text head has {layout.size} ({layout.n_image} image); train the experts with this architecture.")
    if not 1 <= n_pairs <= n_train:
        raise ValueError(f"n_pairs={n_pairs} must lie in [1, {n_train}] (the training set has {n_train} pairs).")
    if s.syn_steps < 1 or s.expert_epochs < 1 or s.max_start_epoch < 1 or s.iterations < 0:
        raise ValueError(f"syn_steps={s.syn_steps}, expert_epochs={s.expert_epochs}, max_start_epoch="
                         f"{s.max_start_epoch} must be >= 1 and iterations={s.iterations} >= 0.")
    if s.max_start_epoch - 1 + s.expert_epochs > experts.epochs:
        raise ValueError(f"max_start_epoch - 1 + expert_epochs = {s.max_start_epoch - 1 + s.expert_epochs} goes beyond "
                         f"the {experts.epochs} epochs of the expert trajectories; lower them or train longer experts.")
    if not 2 <= s.mini_batch <= n_pairs:
        raise ValueError(f"mini_batch={s.mini_batch} must lie in [2, n_pairs={n_pairs}] (contrastive steps need negatives).")
    if min(s.init_lr_image, s.init_lr_text) <= 0:
        raise ValueError("init_lr_image and init_lr_text must be > 0 (they are learned in log space).")


def _batches(rng: np.random.Generator, n: int, size: int, steps: int) -> list[torch.Tensor]:
    """`steps` minibatches walking through shuffled passes over n pairs (LoRS `distill_tesla_lors.py`:
    a fresh permutation when the current one runs out), so every pair is used evenly."""
    out, perm, pos = [], rng.permutation(n), 0
    for _ in range(steps):
        if pos + size > n:
            perm, pos = rng.permutation(n), 0
        out.append(torch.from_numpy(perm[pos:pos + size].copy()))
        pos += size
    return out


def distill(method: str, experts: Experts, image_encoder: nn.Module, num_features: int, train: PairSet,
            n_pairs: int, settings: MatchSettings | None = None, seed: int = 0, snapshots: Sequence[int] = (),
            on_snapshot: Callable[[Distilled], None] | None = None) -> Distilled:
    """Distil `n_pairs` synthetic pairs by trajectory matching: `tm` (MTT-VL) or `lors` (+ low-rank soft
    similarity, WBCE loss).

    image_encoder: a module of the experts' architecture (its weights are not used: every unroll starts from
    an expert's θ*_t); train: the real training pairs, whose M random pairs initialise the set. Each
    iteration draws an expert and a start epoch t < max_start_epoch, unrolls syn_steps student steps from
    θ*_t and minimises `matching_loss` against θ*_{t+K} w.r.t. the pixels, the text embeddings, the log
    student lrs (image, text) and, for LoRS, the similarity. Deterministic from `seed` (the global torch
    RNG is left as it was).

    snapshots: iteration counts k (0 <= k <= iterations) at which `on_snapshot` receives the set as it stands
    after k iterations -- the same set a run with iterations = k returns (one long run gives an iteration curve).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}.")
    s = settings or MatchSettings()
    text_dim = int(np.asarray(train.text).shape[1]) if len(train) else experts.text_dim
    if text_dim != experts.text_dim:
        raise ValueError(f"the training text features are {text_dim}-d but the experts were trained on "
                         f"{experts.text_dim}-d ones; use the same text encoder.")
    net = build_network(image_encoder, num_features, text_dim, s.dropout).train()
    layout = param_layout(net)
    check_matching(experts, layout, len(train), n_pairs, s)
    snaps = sorted({int(k) for k in snapshots})
    if snaps and (snaps[0] < 0 or snaps[-1] > s.iterations or on_snapshot is None):
        raise ValueError(f"snapshots {snaps} must lie in [0, iterations={s.iterations}] and need on_snapshot.")
    rng = np.random.default_rng(seed)
    init = np.sort(rng.choice(len(train), size=n_pairs, replace=False))
    image_rows = torch.from_numpy(np.asarray(train.image_index, dtype=np.int64)[init])
    pixels = normalise(train.images[image_rows], experts.mean, experts.std).requires_grad_(True)  # (M, 3, S, S)
    text = torch.tensor(np.asarray(train.text, dtype=np.float32)[init]).requires_grad_(True)  # (M, d_t)
    log_lr = torch.tensor([math.log(s.init_lr_image), math.log(s.init_lr_text)]).requires_grad_(True)
    traj = torch.from_numpy(np.asarray(experts.params, dtype=np.float32))  # (E, T+1, P)
    losses = []

    def current() -> Distilled:  # the set after len(losses) iterations
        lr_image, lr_text = (float(v) for v in log_lr.detach().exp())
        return Distilled(method, denormalise(pixels.detach(), experts.mean, experts.std).numpy(),
                         pixels.detach().numpy().copy(), text.detach().numpy().copy(), lr_image, lr_text,
                         None if sim is None else sim().detach().numpy().copy(), init, np.asarray(losses),
                         {**asdict(s), "iterations": len(losses), "seed": seed, "n_pairs": n_pairs,
                          "encoder": experts.encoder})

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # L's initialisation and the head's dropout
        sim = LowRankSimilarity(n_pairs, s.rank, s.alpha) if method == "lors" else None
        groups = [{"params": [pixels], "lr": s.lr_img}, {"params": [text], "lr": s.lr_txt},
                  {"params": [log_lr], "lr": s.lr_lr}]
        if sim is not None:
            groups.append({"params": list(sim.parameters()), "lr": s.lr_sim})
        opt = torch.optim.SGD(groups, momentum=s.momentum)
        for it in range(s.iterations):
            if it in snaps:
                on_snapshot(current())
            e, t = int(rng.integers(experts.n_experts)), int(rng.integers(s.max_start_epoch))
            start, target = traj[e, t], traj[e, t + s.expert_epochs]
            if not bool(((start - target) ** 2)[:layout.n_image].sum() > 0) or \
                    not bool(((start - target) ** 2)[layout.n_image:].sum() > 0):
                raise ValueError(f"expert {e} did not move between epochs {t} and {t + s.expert_epochs} (a zero "
                                 "expert lr?); the normalised matching loss is undefined.")
            batches = _batches(rng, n_pairs, s.mini_batch, s.syn_steps)
            loss = matching_loss(net, layout, start, target, pixels, text, log_lr.exp(), batches, sim,
                                 s.merge_branches)
            if not torch.isfinite(loss):
                raise ValueError(f"trajectory matching diverged at iteration {it} (loss {loss.item()}); lower "
                                 "lr_img / lr_txt / lr_lr.")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        final = current()
    if s.iterations in snaps:
        on_snapshot(final)
    return final


def mtt_vl(experts: Experts, image_encoder: nn.Module, num_features: int, train: PairSet, n_pairs: int,
           settings: MatchSettings | None = None, seed: int = 0) -> Distilled:
    """MTT-VL (Wu et al.): `distill` with InfoNCE and hard (identity) targets."""
    return distill("tm", experts, image_encoder, num_features, train, n_pairs, settings, seed)


def lors(experts: Experts, image_encoder: nn.Module, num_features: int, train: PairSet, n_pairs: int,
         settings: MatchSettings | None = None, seed: int = 0) -> Distilled:
    """LoRS (Xu et al.): `distill` with a learned low-rank soft similarity and the WBCE loss."""
    return distill("lors", experts, image_encoder, num_features, train, n_pairs, settings, seed)


def nearest_captions(text: np.ndarray, train_text: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """For each learned text embedding (M, d_t), the row of train_text (N, d_t) of highest cosine: (M,)
    (the references' `nearest_neighbor`, to show the learned text as a sentence)."""
    q = torch.nn.functional.normalize(torch.from_numpy(np.asarray(text, np.float32)), dim=1)
    best_val = torch.full((len(q),), -np.inf)
    best_idx = torch.zeros(len(q), dtype=torch.int64)
    for lo in range(0, len(train_text), chunk):
        k = torch.nn.functional.normalize(torch.from_numpy(np.asarray(train_text[lo:lo + chunk], np.float32)), dim=1)
        val, idx = (q @ k.T).max(dim=1)
        better = val > best_val
        best_val[better], best_idx[better] = val[better], idx[better] + lo
    return best_idx.numpy()


def save_distilled(out_dir, result: Distilled, captions: Sequence[str], caption_ids: np.ndarray,
                   init_caption_ids: np.ndarray, made_from=()) -> Path:
    """Write a distilled set like data/synthetic/: 0000.png ..., `synthetic.parquet` (file, caption =
    nearest real caption, caption_id, init_caption_id), `text.npy` (M, d_t) text targets, `pixels.npy`
    (M, 3, S, S) unrounded normalised pixels, `similarity.npy` (LoRS), `loss.npy` and `meta.json`, then
    manifest.json recording `made_from` (the opened experts and text features)."""
    out = Path(out_dir)
    artifacts.begin(out)
    m = len(result.images)
    files = [f"{i:0{max(4, len(str(m - 1)))}d}.png" for i in range(m)]
    for f, img in zip(files, result.images, strict=True):
        data.save_png(out / f, Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0))))
    for stale in out.glob("*.png"):  # a previous, larger set must not leave extra images behind
        if stale.name not in set(files):
            stale.unlink()
    table = pd.DataFrame({"file": files, "caption": list(captions), "caption_id": np.asarray(caption_ids, np.int64),
                          "init_caption_id": np.asarray(init_caption_ids, np.int64)})
    data.save_table(out / "synthetic.parquet", table)
    data.save_npy(out / "text.npy", result.text.astype(np.float32))
    data.save_npy(out / "pixels.npy", result.pixels.astype(np.float32))
    data.save_npy(out / "loss.npy", result.loss.astype(np.float64))
    sim_file = out / "similarity.npy"
    if result.similarity is not None:
        data.save_npy(sim_file, result.similarity.astype(np.float32))
    else:
        sim_file.unlink(missing_ok=True)
    data.save_json(out / "meta.json", {"method": result.method, "n_pairs": m, "lr_image": result.lr_image,
                                       "lr_text": result.lr_text, "final_loss": _tail_mean(result.loss),
                                       "first_loss": _head_mean(result.loss), "settings": result.settings})
    written = [*files, "synthetic.parquet", "text.npy", "pixels.npy", "loss.npy", "meta.json"]
    artifacts.write_manifest(out, "tm", written + (["similarity.npy"] if result.similarity is not None else []),
                             made_from, {"method": result.method})
    return out


def _head_mean(loss: np.ndarray, k: int = 20) -> float | None:
    return round(float(np.mean(loss[:k])), 6) if len(loss) else None


def _tail_mean(loss: np.ndarray, k: int = 20) -> float | None:
    return round(float(np.mean(loss[-k:])), 6) if len(loss) else None


# ----------------------------------------------------------------------------------------------------
# command line


def load_train_pairs(embeddings_dir, text_features_dir, dataset_root, image_size: int,
                     text_encoder: str = "") -> tuple[PairSet, pd.DataFrame]:
    """The real training pairs (one per train caption) from the embed stage's tables, the text_features
    stage's caption features and the dataset's images: (PairSet, the train caption rows)."""
    from pds import evaluate, text_features, trainsets

    emb = Path(embeddings_dir)
    artifacts.open_artifact(emb, "embed", names=["images.parquet", "captions.parquet"])  # the tables of one run
    images = data.load_table(emb / "images.parquet")
    captions = data.load_table(emb / "captions.parquet")
    feats = text_features.load_text_features(text_features_dir, captions, text_encoder)
    pairs = trainsets.train_pairs(captions)
    train_img = images[images["split"] == "train"]
    pixels = evaluate.load_images(dataset_root, train_img["path"].tolist(), image_size)
    row = pd.Series(np.arange(len(train_img)), index=train_img["image_id"].to_numpy())
    index = row.loc[pairs["image_id"].to_numpy()].to_numpy(np.int64)
    return PairSet(pixels, index, feats[pairs["caption_id"].to_numpy()]), pairs


def stage_commands(params: dict, out="data/tm") -> list[list[str]]:
    """The tm stage as `main`'s command lines, from params.yaml's `tm:` and `base:` sections (`pds.config.load`):
    the experts, then MTT-VL and LoRS against them, on the world base.dataset names."""
    t, base = params["tm"], params["base"]
    world = base["dataset"]
    where = ["--dataset-root", f"data/raw/{world}", "--encoders-dir", f"models/{world}/toy-encoders",
             "--seed", str(base["seed"])]
    experts = ["experts", *where, "--encoder", t["encoder"], "--n-experts", str(t["n_experts"]), "--epochs",
               str(t["epochs"]), "--lr-image", str(t["lr_image"]), "--lr-text", str(t["lr_text"]), "--workers", "2",
               "--out", f"{out}/experts"]
    match = ["--n-pairs", str(base["n_pairs"]), "--experts", f"{out}/experts"]
    for key in ("iterations", "syn_steps", "expert_epochs", "max_start_epoch", "mini_batch", "lr_img", "lr_txt",
                "lr_lr"):
        match += ["--" + key.replace("_", "-"), str(t[key])]
    lors = ["--rank", str(t["rank"]), "--alpha", str(t["alpha"]), "--lr-sim", str(t["lr_sim"])]
    return [experts,
            ["distill", "--method", "tm", *where, *match, "--out", f"{out}/tm"],
            ["distill", "--method", "lors", *where, *match, *lors, "--out", f"{out}/lors"]]


def main(argv: list[str] | None = None) -> None:
    from pds import config, evaluate, models

    parser = argparse.ArgumentParser(description="Expert trajectories and MTT-VL / LoRS trajectory matching.")
    sub = parser.add_subparsers(dest="command", required=True)
    st = sub.add_parser("stage", help="the tm stage: experts, MTT-VL and LoRS with params.yaml's tm: and base:")
    st.add_argument("--params", default="params.yaml")
    st.add_argument("--out", default="data/tm")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--embeddings-dir", default="data/embeddings")
    common.add_argument("--text-features-dir", default="data/text_features")
    common.add_argument("--dataset-root", default="data/raw/toyworld")
    common.add_argument("--seed", type=int, default=42)
    ex = sub.add_parser("experts", parents=[common], help="train expert trajectories on the full training set")
    ex.add_argument("--encoder", default="convnet")
    ex.add_argument("--pretrained", default="toy", help="toy (models/toyworld/toy-encoders) | none")
    ex.add_argument("--encoders-dir", default=models.TOY_ENCODER_DIR)
    ex.add_argument("--n-experts", type=int, default=4)  # references: 20
    ex.add_argument("--epochs", type=int, default=2)  # references: 10, of which max_start_epoch + K = 3 are used
    ex.add_argument("--lr-image", type=float, default=0.1)
    ex.add_argument("--lr-text", type=float, default=0.1)
    ex.add_argument("--batch-size", type=int, default=128)
    ex.add_argument("--momentum", type=float, default=0.0)
    ex.add_argument("--weight-decay", type=float, default=0.0)
    ex.add_argument("--workers", type=int, default=1, help="processes, one thread each (same result)")
    ex.add_argument("--all-captions", action="store_true", help="an epoch = every pair, not one caption per image")
    ex.add_argument("--out", default="data/tm/experts")
    di = sub.add_parser("distill", parents=[common], help="MTT-VL or LoRS matching against saved experts")
    di.add_argument("--method", choices=METHODS, default="lors")
    di.add_argument("--experts", default="data/tm/experts")
    di.add_argument("--encoders-dir", default=models.TOY_ENCODER_DIR)
    di.add_argument("--n-pairs", type=int, default=100)
    for f in MatchSettings.__dataclass_fields__.values():
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            di.add_argument(flag, type=int, default=int(f.default))
        else:
            di.add_argument(flag, type=type(f.default), default=f.default)
    di.add_argument("--out", default="", help="default data/tm/<method>")
    args = parser.parse_args(argv)
    if args.command == "stage":
        for command in stage_commands(config.load(paths.resolve(args.params)), args.out):
            print("+ python -m pds.tm " + " ".join(command), flush=True)
            main(command)
        return
    torch.set_num_threads(evaluate.num_threads(1))
    t0 = time.perf_counter()
    features = artifacts.open_artifact(paths.resolve(args.text_features_dir), "text_features")
    if args.command == "experts":
        load = functools.partial(models.load_image_encoder, args.encoder, args.pretrained, args.encoders_dir)
        size = load().image_size
        train, _ = load_train_pairs(paths.resolve(args.embeddings_dir), paths.resolve(args.text_features_dir),
                                    paths.resolve(args.dataset_root), size)
        experts = train_experts(load, train, args.n_experts, args.epochs, args.lr_image, args.lr_text,
                                args.batch_size, args.momentum, args.weight_decay, not args.all_captions,
                                seed=args.seed, workers=args.workers)
        out = save_experts(paths.resolve(args.out), experts, [features])
        print(f"wrote {out}: {experts.n_experts} experts x {experts.epochs} epochs, P={experts.params.shape[2]}, "
              f"last-epoch loss {experts.losses[:, -1].mean():.3f}, {time.perf_counter() - t0:.0f} s")
        return
    experts = load_experts(paths.resolve(args.experts))
    expert_run = artifacts.open_artifact(paths.resolve(args.experts), "experts", [features])
    enc = models.load_image_encoder(experts.encoder, "none", args.encoders_dir)  # structure only
    train, pairs = load_train_pairs(paths.resolve(args.embeddings_dir), paths.resolve(args.text_features_dir),
                                    paths.resolve(args.dataset_root), experts.image_size)
    settings = MatchSettings(**{k: (bool(getattr(args, k)) if isinstance(v.default, bool) else getattr(args, k))
                                for k, v in MatchSettings.__dataclass_fields__.items()})
    result = distill(args.method, experts, enc.model, enc.num_features, train, args.n_pairs, settings, args.seed)
    nearest = nearest_captions(result.text, train.text)
    caption_ids = pairs["caption_id"].to_numpy(np.int64)
    out = save_distilled(paths.resolve(args.out or f"data/tm/{args.method}"), result,
                         pairs["caption"].astype(str).to_numpy()[nearest], caption_ids[nearest],
                         caption_ids[result.init_pairs], [expert_run, features])
    print(f"wrote {out}: {args.method} M={args.n_pairs}, loss {_head_mean(result.loss)} -> "
          f"{_tail_mean(result.loss)}, lr_image {result.lr_image:.4g}, lr_text {result.lr_text:.4g}, "
          f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
