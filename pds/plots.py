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
