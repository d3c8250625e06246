"""Plotting helpers shared by the notebooks (image grids, ...). Functions return matplotlib Figures and
never save or show them: the notebook decides."""

import textwrap

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from PIL import Image


def montage(images: list[Image.Image], captions: list[str] | None = None, ncols: int = 8,
            cell_inches: float = 1.6, wrap: int = 28) -> Figure:
    """A grid of images (nearest-neighbour upscaled, so small images stay crisp), each with its caption
    wrapped underneath when `captions` is given."""
    if not images:
        raise ValueError("montage needs at least one image.")
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"got {len(captions)} captions for {len(images)} images; pass one per image or None.")
    if ncols < 1:
        raise ValueError(f"ncols={ncols} must be >= 1.")
    ncols = min(ncols, len(images))
    nrows = -(-len(images) // ncols)
    text_h = 0.55 if captions is not None else 0.0
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell_inches * ncols, (cell_inches + text_h) * nrows),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= len(images):
            continue
        ax.imshow(np.asarray(images[i].convert("RGB")), interpolation="nearest")
        if captions is not None:
            ax.set_title("\n".join(textwrap.wrap(captions[i], wrap)), fontsize=6, y=-0.02, va="top")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------
# cluster and match (notebooks 02, 03)


def cluster_size_histograms(ax, sizes: dict[str, np.ndarray], bins: int = 30) -> None:
    """Histogram of cluster sizes (members per cluster) for each named modality, e.g. {"image": (K,), "text": (K,)}."""
    top = max(int(s.max()) for s in sizes.values())
    edges = np.linspace(0, max(top, 1), bins + 1)
    for name, s in sizes.items():
        ax.hist(s, bins=edges, alpha=0.6, label=f"{name} (empty: {int((s == 0).sum())})")
    ax.set_xlabel("pairs per cluster")
    ax.set_ylabel("clusters")
    ax.legend()


def overlap_heatmap(ax, overlap: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> None:
    """Contingency matrix (K, K) with rows = image clusters, columns = their matched text clusters, both in
    decreasing order of matched overlap: a good matching shows as a bright diagonal. Log colour scale."""
    order = np.argsort(-overlap[rows, cols], kind="stable")
    m = overlap[np.ix_(rows[order], cols[order])]
    im = ax.imshow(np.log1p(m), cmap="magma", interpolation="nearest")
    ax.set_xlabel("text cluster (matched, reordered)")
    ax.set_ylabel("image cluster (by matched overlap)")
    ax.figure.colorbar(im, ax=ax, label="log(1 + pairs)")


def overlap_distribution(ax, matched: np.ndarray, bins: int = 30) -> None:
    """Histogram of the pairs in each matched intersection (M,); empty ones are counted in the title."""
    ax.hist(matched, bins=bins, color="tab:purple")
    ax.set_xlabel("pairs in the matched intersection")
    ax.set_ylabel("prototypes")
    ax.set_title(f"{len(matched)} matched pairs of clusters, {int((matched == 0).sum())} empty")


# ----------------------------------------------------------------------------------------------------
# embed (notebook 01)


def pca_scatter(ax, image: np.ndarray, text: np.ndarray, n: int = 1000, seed: int = 0) -> None:
    """2-D PCA of a sample of L2-normalised image and text embeddings, fitted on both together."""
    rng = np.random.default_rng(seed)
    pick = lambda x: x[rng.choice(len(x), min(n, len(x)), replace=False)]  # noqa: E731
    a, b = pick(image), pick(text)
    x = np.concatenate([a, b])
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    x = x - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    y = x @ vt[:2].T  # (2n, 2)
    ax.scatter(*y[: len(a)].T, s=4, alpha=0.5, label="image")
    ax.scatter(*y[len(a):].T, s=4, alpha=0.5, label="text")
    ax.set_title("PCA of CLIP embeddings")
    ax.legend(markerscale=3)


def cosine_histograms(ax, cosines: dict[str, np.ndarray], bins: int = 60) -> None:
    """Overlaid histograms of cosine similarities, e.g. matched vs random image-caption pairs."""
    lo = min(float(c.min()) for c in cosines.values())
    hi = max(float(c.max()) for c in cosines.values())
    edges = np.linspace(lo, hi, bins + 1)
    for name, c in cosines.items():
        ax.hist(c, bins=edges, alpha=0.6, density=True, label=f"{name} (mean {c.mean():.2f})")
    ax.set_xlabel("cosine(image, caption)")
    ax.set_ylabel("density")
    ax.legend()


# ----------------------------------------------------------------------------------------------------
# evaluate (notebook 05)


def rmean_bars(ax, results: list[dict], methods: list[str], encoders: list[str]) -> None:
    """Grouped bars of r_mean (mean over seeds, std as error bars): one group per image encoder, one bar per
    method. `results` are metrics.json entries of a single selection rule."""
    by = {(r["method"], r["image_encoder"]): r for r in results}
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(encoders))
    for k, method in enumerate(methods):
        mean = [by[(method, e)]["r_mean"] if (method, e) in by else np.nan for e in encoders]
        std = [by[(method, e)]["r_mean_std"] if (method, e) in by else 0.0 for e in encoders]
        ax.bar(x + (k - (len(methods) - 1) / 2) * width, mean, width, yerr=std, capsize=3, label=method)
    ax.set_xticks(x, encoders)
    ax.set_xlabel("student image encoder")
    ax.set_ylabel("r_mean (%)")
    ax.legend(ncols=min(len(methods), 5), fontsize=8)


def retrieval_examples(queries: list[str], ranked: list[np.ndarray], truth: list[int], wrap: int = 34,
                       cell_inches: float = 1.2) -> Figure:
    """Text -> image retrieval: one row per query caption, its top-k images (each (H, W, 3) uint8) left to
    right; the query's own image is framed in green, the others in grey. `truth[i]` is the rank of the true
    image in row i, or -1 when it is not among the top k."""
    if not queries or len(queries) != len(ranked) or len(queries) != len(truth):
        raise ValueError("give one ranked image list and one true rank per query caption.")
    k = max(len(r) for r in ranked)
    fig, axes = plt.subplots(len(queries), k + 1, squeeze=False,
                             figsize=(cell_inches * (k + 2), cell_inches * len(queries)),
                             gridspec_kw={"width_ratios": [2] + [1] * k})
    for i, (query, row) in enumerate(zip(queries, ranked, strict=True)):
        axes[i, 0].axis("off")
        axes[i, 0].text(0, 0.5, "\n".join(textwrap.wrap(query, wrap)), fontsize=7, va="center")
        for j in range(k):
            ax = axes[i, j + 1]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(row):
                ax.axis("off")
                continue
            ax.imshow(row[j], interpolation="nearest")
            hit = j == truth[i]
            for spine in ax.spines.values():
                spine.set_edgecolor("tab:green" if hit else "0.8")
                spine.set_linewidth(3 if hit else 1)
            if i == 0:
                ax.set_title(f"top {j + 1}", fontsize=7)
    fig.tight_layout()
    return fig
