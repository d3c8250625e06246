"""Plotting helpers shared by the notebooks (image grids, histograms, method comparisons). Functions return
matplotlib Figures or draw on a given Axes, and never save or show them: the notebook decides.

Conventions every figure keeps: each method has one colour (`METHOD_COLOURS`, Okabe & Ito's colour-blind-safe
palette), the same in every notebook and in `studies.sweep`; all text is at least `MIN_FONTSIZE` points; captions
sit under their image in space of their own, and legends outside the data they label.
"""

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from PIL import Image

# One colour per method, in every figure (Okabe & Ito 2008, "Color Universal Design"; #999999 is the grey
# usually added to it). The order is the legend order. The controls came after its eight legible colours were
# taken: theirs are 0x11-grid colours (contrast >= 3:1 on white, CIELAB L* 30-60) chosen far from the colours
# here in normal vision and in simulated deuteranopia, protanopia and tritanopia (Machado 2009): each is at least
# 21 Delta-E (CIE76) from every other method's colour in all four (the Okabe-Ito colours among themselves: 7).
METHOD_COLOURS = {
    "pds": "#D55E00",  # vermillion
    "pds_real": "#E69F00",  # orange: PDS's prototypes with the nearest real images (ablation)
    "random": "#999999",  # grey
    "random_kept": "#664400",  # dark brown: random pairs of the noise filter's pool (control)
    "random_avg": "#7755DD",  # slate violet: random kept images, mean of their own captions as target (control)
    "random_nbr": "#9900FF",  # violet: random kept pairs, mean caption of their k nearest pairs (control)
    "herding": "#0072B2",  # blue
    "kcenter": "#009E73",  # bluish green
    "full": "#000000",  # black: the full-data upper bound
    "tm": "#CC79A7",  # reddish purple: MTT-VL, trajectory matching (pds.tm)
    "lors": "#56B4E9",  # sky blue: LoRS, trajectory matching with learned soft labels (pds.tm)
}
# Synthetic vs real images in a montage: synthetic ones framed in PDS's colour (they are what PDS makes), real
# ones in dark grey; the kind is also written above the caption, so colour is never the only cue.
IMAGE_KIND_COLOURS = {"synthetic": METHOD_COLOURS["pds"], "real": "#555555"}
# Figures whose series are not methods (modalities, matched vs random pairs): colours outside the method palette
# (Paul Tol's indigo and teal), and grey for a chance-level reference.
MODALITY_COLOURS = {"image": "#332288", "text": "#44AA99"}
SERIES_COLOURS = ("#332288", "#999999", "#44AA99", "#882255")  # the thing shown, its reference, then others
HIT_COLOUR, MISS_COLOUR = "#228833", "#CCCCCC"  # retrieval examples: the query's own image / the others
MIN_FONTSIZE = 9  # points; every text in these figures is at least this large
# Jupyter and the HTML book show a figure at 100 dpi in a column about 1,050 px wide; a wider figure is scaled down
# to fit, its 9-pt text with it. Figures made here stay within this width.
MAX_WIDTH_INCHES = 10.5
FONTSIZE = 9  # captions, legends and annotations


def method_colour(name: str) -> str:
    """The fixed colour of a method (hex string); an unknown method is an error, never a default colour."""
    try:
        return METHOD_COLOURS[name]
    except KeyError:
        raise ValueError(f"no colour for method {name!r}: add it to pds.plots.METHOD_COLOURS "
                         f"(known: {', '.join(METHOD_COLOURS)}).") from None


def method_order(names) -> list[str]:
    """`names` in the palette's order (the order of every legend); unknown methods raise like `method_colour`."""
    names = list(dict.fromkeys(names))
    for n in names:
        method_colour(n)
    order = list(METHOD_COLOURS)
    return sorted(names, key=order.index)


def legend_outside(ax, **kwargs):
    """A legend to the right of `ax`, outside the axes, so it never covers the data; `tight_layout` and
    `savefig(bbox_inches="tight")` make room for it."""
    kwargs = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "borderaxespad": 0.0, "fontsize": FONTSIZE,
              "frameon": False} | kwargs
    return ax.legend(**kwargs)


# ----------------------------------------------------------------------------------------------------
# image grids


def _text_width_px(renderer, text: str, fontsize: float, weight: str = "normal") -> float:
    from matplotlib.font_manager import FontProperties

    w, _, _ = renderer.get_text_width_height_descent(text, FontProperties(size=fontsize, weight=weight),
                                                     ismath=False)
    return w


def wrap_to_width(text: str, width_inches: float, fontsize: float = FONTSIZE, max_lines: int = 6,
                  renderer=None) -> list[str]:
    """Greedy word wrap of `text` into lines that fit `width_inches` at `fontsize` (measured with the Agg
    renderer, not guessed from a character count); more than `max_lines` lines end in an ellipsis."""
    if renderer is None:
        from matplotlib.backends.backend_agg import RendererAgg

        renderer = RendererAgg(10, 10, 72)
    limit = width_inches * renderer.dpi
    lines: list[str] = []
    for word in text.split():
        # a single word wider than the cell is cut into pieces that fit
        while _text_width_px(renderer, word, fontsize) > limit and len(word) > 1:
            k = len(word)
            while k > 1 and _text_width_px(renderer, word[:k] + "-", fontsize) > limit:
                k -= 1
            lines.append(word[:k] + "-")
            word = word[k:]
        if lines and _text_width_px(renderer, f"{lines[-1]} {word}", fontsize) <= limit and not lines[-1].endswith("-"):
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        while lines[-1] and _text_width_px(renderer, lines[-1] + " …", fontsize) > limit:
            lines[-1] = lines[-1][:-1]
        lines[-1] = lines[-1].rstrip() + " …"
    return lines


def montage(images: list[Image.Image], captions: list[str] | None = None, ncols: int = 8,
            cell_inches: float = 1.6, kinds: list[str] | None = None, fontsize: float = FONTSIZE,
            max_lines: int = 8) -> Figure:
    """A grid of images (nearest-neighbour upscaled, so small images stay crisp), each caption wrapped under
    its image in a band of its own (never over the image), at `fontsize` >= 9 pt. Cells shrink below
    `cell_inches` when `ncols` of them would be wider than `MAX_WIDTH_INCHES`.

    `kinds` (one of "synthetic" / "real" per image) frames each image in its kind's colour
    (`IMAGE_KIND_COLOURS`) and writes the kind above its caption.
    """
    if not images:
        raise ValueError("montage needs at least one image.")
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"got {len(captions)} captions for {len(images)} images; pass one per image or None.")
    if kinds is not None:
        if len(kinds) != len(images):
            raise ValueError(f"got {len(kinds)} kinds for {len(images)} images; pass one per image or None.")
        unknown = sorted(set(kinds) - set(IMAGE_KIND_COLOURS))
        if unknown:
            raise ValueError(f"unknown image kinds {unknown}; use {' / '.join(IMAGE_KIND_COLOURS)}.")
    if ncols < 1:
        raise ValueError(f"ncols={ncols} must be >= 1.")
    if fontsize < MIN_FONTSIZE:
        raise ValueError(f"fontsize={fontsize} is below {MIN_FONTSIZE} pt: too small to read at 100 % zoom.")
    ncols = min(ncols, len(images))
    nrows = -(-len(images) // ncols)
    gap = 0.12  # inches between cells
    cell_inches = min(cell_inches, (MAX_WIDTH_INCHES - (ncols + 1) * gap) / ncols)
    line = fontsize * 1.3 / 72  # inches per caption line
    from matplotlib.backends.backend_agg import RendererAgg

    renderer = RendererAgg(10, 10, 72)
    texts = []  # per image: (kind label or None, caption lines)
    for i in range(len(images)):
        kind = kinds[i] if kinds is not None else None
        lines = wrap_to_width(captions[i], cell_inches, fontsize, max_lines, renderer) if captions else []
        texts.append((kind, lines))
    # each row's caption band is as tall as its longest caption, so no caption reaches the next row's images
    band = [max((len(texts[i][1]) + (texts[i][0] is not None) for i in range(r * ncols, min((r + 1) * ncols,
                len(images)))), default=0) * line for r in range(nrows)]
    band = [b + (0.06 if b else 0.0) for b in band]
    width = ncols * cell_inches + (ncols + 1) * gap
    height = sum(cell_inches + b + gap for b in band) + gap
    fig = plt.figure(figsize=(width, height))
    top = height - gap
    for r in range(nrows):
        for q in range(ncols):
            i = r * ncols + q
            if i >= len(images):
                break
            left = gap + q * (cell_inches + gap)
            ax = fig.add_axes((left / width, (top - cell_inches) / height, cell_inches / width, cell_inches / height))
            ax.imshow(np.asarray(images[i].convert("RGB")), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            kind, lines = texts[i]
            for spine in ax.spines.values():
                spine.set_visible(kind is not None)
                if kind is not None:
                    spine.set_edgecolor(IMAGE_KIND_COLOURS[kind])
                    spine.set_linewidth(3 if kind == "synthetic" else 1.5)
            y = top - cell_inches - 0.06  # inches from the bottom of the figure: just under the image
            x = (left + cell_inches / 2) / width
            if kind is not None:
                fig.text(x, y / height, kind, ha="center", va="top", fontsize=fontsize, fontweight="bold",
                         color=IMAGE_KIND_COLOURS[kind])
                y -= line
            if lines:
                fig.text(x, y / height, "\n".join(lines), ha="center", va="top", fontsize=fontsize,
                         linespacing=1.15)
        top -= cell_inches + band[r] + gap
    return fig


# ----------------------------------------------------------------------------------------------------
# cluster and match (notebooks 02, 03)


def cluster_size_histograms(ax, sizes: dict[str, np.ndarray], bins: int = 30) -> None:
    """Histogram of cluster sizes (members per cluster) for each named modality, e.g. {"image": (K,), "text": (K,)}."""
    top = max(int(s.max()) for s in sizes.values())
    edges = np.linspace(0, max(top, 1), bins + 1)
    for k, (name, s) in enumerate(sizes.items()):
        ax.hist(s, bins=edges, alpha=0.6, color=MODALITY_COLOURS.get(name, SERIES_COLOURS[k % len(SERIES_COLOURS)]),
                label=f"{name} (empty: {int((s == 0).sum())})")
    ax.set_xlabel("pairs per cluster")
    ax.set_ylabel("clusters")
    legend_outside(ax)


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
    ax.hist(matched, bins=bins, color=SERIES_COLOURS[0])
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
    ax.scatter(*y[: len(a)].T, s=4, alpha=0.5, color=MODALITY_COLOURS["image"], label="image")
    ax.scatter(*y[len(a):].T, s=4, alpha=0.5, color=MODALITY_COLOURS["text"], label="text")
    ax.set_title("PCA of CLIP embeddings")
    legend_outside(ax, markerscale=3)


def cosine_histograms(ax, cosines: dict[str, np.ndarray], bins: int = 60) -> None:
    """Overlaid histograms of cosine similarities, e.g. matched vs random image-caption pairs (the first series
    in indigo, the second, the reference, in grey)."""
    lo = min(float(c.min()) for c in cosines.values())
    hi = max(float(c.max()) for c in cosines.values())
    edges = np.linspace(lo, hi, bins + 1)
    for k, (name, c) in enumerate(cosines.items()):
        ax.hist(c, bins=edges, alpha=0.6, density=True, color=SERIES_COLOURS[k % len(SERIES_COLOURS)],
                label=f"{name} (mean {c.mean():.2f})")
    ax.set_xlabel("cosine(image, caption)")
    ax.set_ylabel("density")
    legend_outside(ax)


# ----------------------------------------------------------------------------------------------------
# evaluate (notebook 05) and the budget sweep (studies.sweep)


def rmean_bars(ax, table, methods: list[str], encoders: list[str], legend: bool = True) -> None:
    """Grouped bars of r_mean (mean over seeds, sample sd as error bars): one group per image encoder, one bar
    per method in its fixed colour. `table` is `pds.results.rows(metrics)` of one protocol. The legend
    (`legend=False`: none, e.g. on all but one panel) sits outside the axes, right of them."""
    by = {(r["method"], r["image_encoder"]): r for r in table.to_dict("records")}
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(encoders))
    for k, method in enumerate(methods):
        mean = [by[(method, e)]["r_mean"] if (method, e) in by else np.nan for e in encoders]
        std = [by[(method, e)]["sd"] if (method, e) in by else 0.0 for e in encoders]
        ax.bar(x + (k - (len(methods) - 1) / 2) * width, mean, width, yerr=std, capsize=3, label=method,
               color=method_colour(method))
    ax.set_xticks(x, encoders)
    ax.set_xlabel("student image encoder")
    ax.set_ylabel("r_mean (%)")
    if legend:
        legend_outside(ax, title="method", title_fontsize=FONTSIZE)


def method_curves(ax, curves, marker: str = "o") -> None:
    """One line per method in its fixed colour: `curves` is a DataFrame indexed by x (e.g. epoch) with one
    column per method (e.g. `runs.pivot_table(index="epoch", columns="method", values="r_mean")`)."""
    for method in method_order(curves.columns):
        ax.plot(curves.index, curves[method], marker=marker, color=method_colour(method), label=method)
    ax.set_xlabel(curves.index.name or "")
    legend_outside(ax, title="method", title_fontsize=FONTSIZE)


def matching_loss(ax, losses: dict[str, np.ndarray], windows: int = 15) -> None:
    """Trajectory-matching loss per iteration, one method per colour: faint, and as a running mean over
    len / `windows` iterations (each iteration draws another expert and start epoch, so single values jump); a
    dashed line at 1, the line to beat."""
    for method in method_order(losses):
        loss = np.asarray(losses[method], dtype=float)
        window = max(1, len(loss) // windows)
        ax.plot(np.arange(len(loss)), loss, color=method_colour(method), alpha=0.3, linewidth=1)
        ax.plot(np.arange(window - 1, len(loss)), np.convolve(loss, np.ones(window) / window, mode="valid"),
                color=method_colour(method), linewidth=2, label=f"{method} (running mean of {window})")
    # 1: N student steps on the set bring it no closer to the expert's target than no training at all
    ax.axhline(1.0, color=SERIES_COLOURS[1], linestyle="--", linewidth=1.5, label="1: no closer than not training")
    ax.set_xlabel("matching iteration")
    ax.set_ylabel("normalised matching loss")
    legend_outside(ax)


def retrieval_examples(queries: list[str], ranked: list[np.ndarray], truth: list[int],
                       cell_inches: float = 1.0, fontsize: float = FONTSIZE) -> Figure:
    """Text -> image retrieval: one row per query caption (wrapped in a column of its own, left), its top-k
    images (each (H, W, 3) uint8) left to right; the query's own image is framed in green (`HIT_COLOUR`), the
    others in light grey. `truth[i]` is the rank of the true image in row i, or -1 when it is not among the
    top k."""
    if not queries or len(queries) != len(ranked) or len(queries) != len(truth):
        raise ValueError("give one ranked image list and one true rank per query caption.")
    if fontsize < MIN_FONTSIZE:
        raise ValueError(f"fontsize={fontsize} is below {MIN_FONTSIZE} pt: too small to read at 100 % zoom.")
    from matplotlib.backends.backend_agg import RendererAgg

    renderer = RendererAgg(10, 10, 72)
    k = max(len(r) for r in ranked)
    gap, line = 0.12, fontsize * 1.3 / 72  # inches
    cell_inches = min(cell_inches, (MAX_WIDTH_INCHES - (k + 2) * gap) / (k + 2.4))  # the width below <= max
    text_w = 2.4 * cell_inches
    wrapped = [wrap_to_width(q, text_w, fontsize, max_lines=8, renderer=renderer) for q in queries]
    row_h = [max(cell_inches, len(w) * line) for w in wrapped]
    header = line + 0.05
    width = gap + text_w + gap + k * (cell_inches + gap)
    height = gap + header + sum(h + gap for h in row_h)
    fig = plt.figure(figsize=(width, height))
    top = height - gap - header
    for i, (lines, row) in enumerate(zip(wrapped, ranked, strict=True)):
        mid = top - row_h[i] / 2
        fig.text(gap / width, mid / height, "\n".join(lines), fontsize=fontsize, va="center", ha="left",
                 linespacing=1.15)
        for j in range(min(k, len(row))):
            left = gap + text_w + gap + j * (cell_inches + gap)
            ax = fig.add_axes((left / width, (mid - cell_inches / 2) / height, cell_inches / width,
                               cell_inches / height))
            ax.imshow(row[j], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            hit = j == truth[i]
            for spine in ax.spines.values():
                spine.set_edgecolor(HIT_COLOUR if hit else MISS_COLOUR)
                spine.set_linewidth(3 if hit else 1)
            if i == 0:
                fig.text((left + cell_inches / 2) / width, (height - gap) / height, f"top {j + 1}",
                         fontsize=fontsize, ha="center", va="top")
        top -= row_h[i] + gap
    return fig


# ----------------------------------------------------------------------------------------------------
# lessons: figures that follow one step of PDS by hand (notebooks 01-04)


def pca_fit(x: np.ndarray, n_components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Principal axes of the rows of x (n, d): (mean (d,), components (n_components, d)); project with
    `(x - mean) @ components.T`. Each axis' sign is fixed (its largest loading is positive), so a figure does not
    flip between LAPACK builds."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2 or not 1 <= n_components <= min(x.shape):
        raise ValueError(f"pca_fit needs an (n >= 2, d) array and 1 <= n_components <= min(n, d); got shape "
                         f"{x.shape} and n_components={n_components}.")
    mean = x.mean(axis=0)  # (d,)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    comps = vt[:n_components]  # (k, d)
    comps = comps * np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])[:, None]
    return mean, comps


def scatter_2d(ax, points: dict[str, np.ndarray], title: str = "", size: float = 5) -> None:
    """2-D points (n, 2) per named series (e.g. {"image": ..., "text": ...}), modalities in their colours
    (`MODALITY_COLOURS`), other series in `SERIES_COLOURS`; legend outside the axes."""
    for k, (name, xy) in enumerate(points.items()):
        xy = np.asarray(xy)
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise ValueError(f"scatter_2d: {name!r} has shape {xy.shape}; give (n, 2) points, e.g. the first two "
                             "columns of a projection on more axes (xy[:, :2]).")
        colour = MODALITY_COLOURS.get(name, SERIES_COLOURS[k % len(SERIES_COLOURS)])
        ax.scatter(*xy.T, s=size, alpha=0.5, color=colour, linewidths=0, label=name)
    ax.set_title(title)
    legend_outside(ax, markerscale=3)


def cosine_matrix(ax, sim: np.ndarray, xlabel: str = "caption", ylabel: str = "image") -> None:
    """A small (rows, cols) matrix of cosines as a heatmap with a colour bar, rows and columns numbered from 1
    (the numbers of the images / captions shown next to it)."""
    sim = np.asarray(sim)
    im = ax.imshow(sim, cmap="viridis", vmin=min(0.0, float(sim.min())), vmax=1.0, interpolation="nearest")
    ax.set_xticks(range(sim.shape[1]), [str(k + 1) for k in range(sim.shape[1])])
    ax.set_yticks(range(sim.shape[0]), [str(k + 1) for k in range(sim.shape[0])])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.figure.colorbar(im, ax=ax, label="cosine")


def dropped_by_length(ax, n_words: np.ndarray, keep: np.ndarray, rm_ratio: float) -> None:
    """Share of pairs the noise filter drops, by the length of their caption (words), as bars; a line at
    `rm_ratio`, the share dropped overall. n_words (n,) int, keep (n,) bool."""
    n_words, keep = np.asarray(n_words), np.asarray(keep, dtype=bool)
    lengths = np.arange(n_words.min(), n_words.max() + 1)
    pairs = np.bincount(n_words - lengths[0], minlength=len(lengths))  # (L,)
    dropped = np.bincount(n_words[~keep] - lengths[0], minlength=len(lengths))  # (L,)
    share = np.divide(dropped, pairs, out=np.zeros(len(lengths)), where=pairs > 0)
    ax.bar(lengths, 100 * share, width=0.8, color=SERIES_COLOURS[1], label="dropped, by caption length")
    ax.axhline(100 * rm_ratio, color=SERIES_COLOURS[0], linestyle="--", label=f"dropped overall ({rm_ratio:.0%})")
    ax.set_xlabel("words in the caption")
    ax.set_ylabel("pairs dropped (%)")
    ax.set_ylim(0, 100)
    legend_outside(ax)


def match_region(ax, image_members: np.ndarray, image_in_both: np.ndarray, text_members: np.ndarray,
                 text_in_both: np.ndarray, image_centroid: np.ndarray, text_centroid: np.ndarray,
                 image_prototype: np.ndarray, text_prototype: np.ndarray, prompt: np.ndarray | None = None,
                 names: tuple[str, str] = ("image cluster", "text cluster")) -> None:
    """One matched pair of clusters in 2-D: the image embeddings of the image cluster's pairs (n_i, d) and the
    text embeddings of the text cluster's pairs (n_t, d), those in the matched intersection (masks (n_i,),
    (n_t,)) drawn solid, the others faint; the two k-means centroids (crosses), the image and text prototypes
    (PDS's colour: star and plus) and the retrieved prompt caption (diamond). Every vector is L2-normalised (a
    direction, as cosine sees it) and projected on the first two principal axes of the members."""
    unit = [np.atleast_2d(np.asarray(v, dtype=np.float64)) for v in
            (image_members, text_members, image_centroid, text_centroid, image_prototype, text_prototype)
            + ((prompt,) if prompt is not None else ())]
    unit = [v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12) for v in unit]
    mean, comps = pca_fit(np.concatenate(unit[:2]))
    xy = [(v - mean) @ comps.T for v in unit]
    image_in_both, text_in_both = np.asarray(image_in_both, bool), np.asarray(text_in_both, bool)
    for (name, pts, both), modality in zip(((names[0], xy[0], image_in_both), (names[1], xy[1], text_in_both)),
                                           ("image", "text"), strict=True):
        colour = MODALITY_COLOURS[modality]
        ax.scatter(*pts[~both].T, s=12, alpha=0.35, color=colour, linewidths=0,
                   label=f"{name}, not in the intersection ({int((~both).sum())})")
        ax.scatter(*pts[both].T, s=20, alpha=0.9, color=colour, linewidths=0,
                   label=f"{name}, in the intersection ({int(both.sum())})")
    pds = method_colour("pds")
    ax.scatter(*xy[2].T, s=220, marker="X", color=MODALITY_COLOURS["image"], label=f"{names[0]} centroid")
    ax.scatter(*xy[3].T, s=220, marker="X", color=MODALITY_COLOURS["text"], label=f"{names[1]} centroid")
    ax.scatter(*xy[4].T, s=380, marker="*", color=pds, label="image prototype (PDS)")
    ax.scatter(*xy[5].T, s=220, marker="P", color=pds, label="text prototype (PDS)")
    if prompt is not None:
        ax.scatter(*xy[6].T, s=110, marker="D", color=IMAGE_KIND_COLOURS["real"], label="retrieved prompt caption")
    ax.set_xlabel("principal axis 1")
    ax.set_ylabel("principal axis 2")
    legend_outside(ax, markerscale=1)
