"""Figure conventions of pds.plots (and studies.sweep): one colour per method, from one palette, in every figure;
text of at least 9 pt; captions under their images, never over them; legends outside the data."""

import ast
import json
import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.colors import to_hex, to_rgba  # noqa: E402
from matplotlib.container import BarContainer, ErrorbarContainer  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from PIL import Image  # noqa: E402

from pds import plots  # noqa: E402
from pds.paths import ROOT  # noqa: E402
from studies import sweep  # noqa: E402

OKABE_ITO = {"#000000", "#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7", "#999999"}
METHODS = ["pds", "random", "herding", "kcenter", "full"]
ENCODERS = ["convnet", "resnet", "vit"]
CAPTION = "three huge violet crosses in a row across the centre of the image against diagonal stripes"


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def images(n, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def fake_results():
    return pd.DataFrame([{"method": m, "image_encoder": e, "r_mean": 20.0 + 10 * k, "sd": 1.0}
                         for k, m in enumerate(METHODS) for e in ENCODERS])


def fake_sweep():
    return pd.DataFrame([{"protocol": "field", "n_pairs": n, "method": m, "image_encoder": e, "r_mean": 10.0 + 5 * k + n / 100,
                          "sd": 1.0, "n": 3} for n in (100, 200, 500) for k, m in enumerate(METHODS) for e in ENCODERS])


# ----------------------------------------------------------------------------------------------------
# one palette


def declared_methods():
    """Every method name a pds module declares in a module-level `METHODS = (...)` tuple (pds.evaluate, pds.tm)."""
    names = set()
    for path in (ROOT / "pds").glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if (isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "METHODS" for t in node.targets)
                    and isinstance(node.value, ast.Tuple | ast.List)):
                names |= {e.value for e in node.value.elts if isinstance(e, ast.Constant)}
    return names


def test_every_method_has_one_distinct_colour_blind_safe_colour():
    assert set(METHODS) | {"pds_real"} <= declared_methods()  # the scan finds pds.evaluate.METHODS
    missing = declared_methods() - set(plots.METHOD_COLOURS)
    assert not missing, f"methods without a colour in pds.plots.METHOD_COLOURS: {sorted(missing)}"
    colours = [to_hex(c) for c in plots.METHOD_COLOURS.values()]
    assert len(set(colours)) == len(colours), "two methods share a colour"
    controls = {to_hex(plots.METHOD_COLOURS[m]) for m in CONTROLS}
    assert set(colours) - controls <= OKABE_ITO, "method colours come from the Okabe-Ito palette (plus its grey)"
    assert "#f0e442" not in colours  # Okabe-Ito yellow is unreadable on white
    # synthetic images are PDS's: framed in its colour; real ones in a colour no method uses
    assert plots.IMAGE_KIND_COLOURS["synthetic"] == plots.method_colour("pds")
    assert to_hex(plots.IMAGE_KIND_COLOURS["real"]) not in colours


CONTROLS = ["random_kept", "random_avg", "random_nbr"]
# Machado, Oliveira & Fernandes 2009, severity 1, on linear RGB
CVD = {"normal": np.eye(3),
       "deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]],
       "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]],
       "tritanopia": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]]}


def _linear_rgb(hex_colour):
    c = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)]) / 255
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _lab(rgb):
    """CIELAB (D65) of a linear-RGB colour, by the textbook formulas."""
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ rgb
    f = [v ** (1 / 3) if v > (6 / 29) ** 3 else v / (3 * (6 / 29) ** 2) + 4 / 29
         for v in xyz / np.array([0.95047, 1.0, 1.08883])]
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_the_controls_colours_are_legible_and_far_from_every_other_method_also_for_colour_blind_readers():
    for m in CONTROLS:
        rgb = _linear_rgb(plots.METHOD_COLOURS[m])
        luminance = float(rgb @ [0.2126, 0.7152, 0.0722])
        assert 1.05 / (luminance + 0.05) >= 3, f"{m}: contrast on white below 3:1 (WCAG for graphics)"
        for other, colour in plots.METHOD_COLOURS.items():
            if other == m:
                continue
            for view, sim in CVD.items():
                a = _lab(np.clip(np.asarray(sim) @ rgb, 0, 1))
                b = _lab(np.clip(np.asarray(sim) @ _linear_rgb(colour), 0, 1))
                assert np.linalg.norm(a - b) >= 20, f"{m} and {other} look alike ({view})"


def test_method_colour_fails_clearly_for_an_unknown_method():
    assert plots.method_colour("kcenter") == plots.METHOD_COLOURS["kcenter"]
    with pytest.raises(ValueError, match=r"no colour for method 'dream'.*METHOD_COLOURS"):
        plots.method_colour("dream")
    with pytest.raises(ValueError, match="dream"):
        plots.method_order(["pds", "dream"])
    assert plots.method_order(["full", "kcenter", "pds", "full"]) == ["pds", "kcenter", "full"]


COLOUR_KWARGS = {"color", "colors", "colour", "c", "facecolor", "facecolors", "edgecolor", "edgecolors", "ecolor",
                 "markerfacecolor", "markeredgecolor", "mfc", "mec"}
COLOUR_LITERAL = re.compile(r"^(#[0-9a-fA-F]{3}|#[0-9a-fA-F]{6}|#[0-9a-fA-F]{8}|tab:\w+|xkcd:.+)$")
PALETTE_NAMES = {"METHOD_COLOURS", "IMAGE_KIND_COLOURS", "MODALITY_COLOURS", "SERIES_COLOURS", "HIT_COLOUR",
                 "MISS_COLOUR"}


def literal_leaves(node):
    """String literals an expression can evaluate to ("0.8", "tab:green" if hit else "k", ["r", "b"]); a lookup
    such as PALETTE["image"] or method_colour("pds") is not a literal colour."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.IfExp):
        yield from literal_leaves(node.body)
        yield from literal_leaves(node.orelse)
    elif isinstance(node, ast.List | ast.Tuple | ast.Set):
        for e in node.elts:
            yield from literal_leaves(e)


def hard_coded_colours(source: str, where: str, palette_allowed: bool) -> list[str]:
    """Colour literals in `source`: strings that look like colours anywhere, and any literal passed as a colour
    argument; inside the palette's own assignments (pds/plots.py) they are the definition, not a use."""
    tree = ast.parse(source)
    skip = set()
    if palette_allowed:
        for node in tree.body:
            if isinstance(node, ast.Assign) and {getattr(t, "id", None) for t in ast.walk(node.targets[0])} & PALETTE_NAMES:
                skip |= {id(n) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.keyword) and node.arg in COLOUR_KWARGS:
            for leaf in literal_leaves(node.value):
                found.append(f"{where}:{node.value.lineno}: {node.arg}={leaf!r}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args
              and node.func.attr in {"set_color", "set_edgecolor", "set_facecolor"}):
            for leaf in literal_leaves(node.args[0]):
                found.append(f"{where}:{node.lineno}: {node.func.attr}({leaf!r})")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and COLOUR_LITERAL.match(node.value):
            found.append(f"{where}:{node.lineno}: {node.value!r}")
    return found


def test_the_palette_is_the_only_source_of_colours_in_pds_and_the_notebooks():
    found = []
    for path in sorted((ROOT / "pds").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        found += hard_coded_colours(path.read_text(), rel, palette_allowed=rel == "pds/plots.py")
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        for k, cell in enumerate(cells):
            source = "".join(cell["source"])
            found += hard_coded_colours(source, f"{path.relative_to(ROOT).as_posix()} code cell {k}", False)
    assert not found, "colours written out instead of taken from pds.plots' palette:\n" + "\n".join(found)


def test_the_scan_would_catch_a_hard_coded_colour():
    assert hard_coded_colours('ax.bar(x, y, color="tab:blue")', "x", False)
    assert hard_coded_colours('ax.plot(x, y, c="0.5")', "x", False)
    assert hard_coded_colours('spine.set_edgecolor("green" if hit else "0.8")', "x", False)
    assert hard_coded_colours('COLOURS = {"pds": "#D55E00"}', "x", False)
    assert not hard_coded_colours('METHOD_COLOURS = {"pds": "#D55E00"}', "x", True)
    assert not hard_coded_colours("ax.bar(x, y, color=plots.method_colour(m))", "x", False)


def test_rmean_bars_draw_each_method_in_its_colour():
    fig, ax = plt.subplots()
    plots.rmean_bars(ax, fake_results(), METHODS, ENCODERS)
    bar_groups = [c for c in ax.containers if isinstance(c, BarContainer)]
    for method, bars in zip(METHODS, bar_groups, strict=True):
        assert len(bars.patches) == len(ENCODERS)
        for patch in bars.patches:
            assert patch.get_facecolor() == to_rgba(plots.method_colour(method)), method


def test_plot_budget_draws_each_method_in_its_colour():
    fig = sweep.plot_budget(fake_sweep())
    for ax in fig.axes:
        drawn = {c.get_label(): c.lines[0].get_color() for c in ax.containers if isinstance(c, ErrorbarContainer)}
        drawn |= {line.get_label(): line.get_color() for line in ax.get_lines() if line.get_label() == "full data"}
        assert set(drawn) == {"pds", "random", "herding", "kcenter", "full data"}
        for label, colour in drawn.items():
            method = "full" if label == "full data" else label
            assert to_hex(colour) == to_hex(plots.method_colour(method)), (ax.get_title(), method)
    labels = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert labels == ["pds", "random", "herding", "kcenter", "full data"]  # the palette's order


def test_plot_budget_refuses_a_method_without_a_colour():
    df = fake_sweep()
    df.loc[df.method == "random", "method"] = "dream"
    with pytest.raises(ValueError, match="METHOD_COLOURS"):
        sweep.plot_budget(df)


def test_method_curves_use_the_palette():
    curves = pd.DataFrame({"kcenter": [1, 2, 3], "pds": [1, 1, 2]}, index=pd.Index([0, 10, 20], name="epoch"))
    fig, ax = plt.subplots()
    plots.method_curves(ax, curves)
    assert [(line.get_label(), to_hex(line.get_color())) for line in ax.get_lines()] == [
        ("pds", to_hex(plots.method_colour("pds"))), ("kcenter", to_hex(plots.method_colour("kcenter")))]



def test_matching_loss_draws_each_method_and_its_running_mean_in_its_colour():
    fig, ax = plt.subplots()
    plots.matching_loss(ax, {"lors": np.linspace(2, 1, 30), "tm": np.linspace(2, 1.2, 30)})
    *lines, reference = ax.get_lines()
    assert [to_hex(line.get_color()) for line in lines] == [to_hex(plots.method_colour(m)) for m in
                                                            ("tm", "tm", "lors", "lors")]
    assert len(lines[1].get_xdata()) == 30 - 2 + 1  # a running mean over 30 // 15 = 2 iterations
    # the line to beat: 1, the student no closer to the expert than without training
    assert set(reference.get_ydata()) == {1.0} and reference.get_linestyle() == "--"
    assert to_hex(reference.get_color()) == to_hex(plots.SERIES_COLOURS[1])

# ----------------------------------------------------------------------------------------------------
# legibility


def figures():
    """One figure from every plotting function, drawn as a notebook would."""
    out = {}
    out["montage"] = plots.montage(images(16), [CAPTION] * 16, ncols=8)
    out["montage_kinds"] = plots.montage(images(4), [CAPTION, "nearest", "a", CAPTION], ncols=4,
                                         kinds=["synthetic", "real"] * 2)
    out["retrieval_examples"] = plots.retrieval_examples(
        [CAPTION, "two red disks"], [np.stack([np.asarray(im) for im in images(5)])] * 2, [0, -1])
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), sharey=True)
    for ax in axes:
        plots.rmean_bars(ax, fake_results(), METHODS, ENCODERS)
    fig.tight_layout()
    out["rmean_bars"] = fig
    out["plot_budget"] = sweep.plot_budget(fake_sweep())
    rng = np.random.default_rng(0)
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    plots.cluster_size_histograms(axes[0, 0], {"image": rng.integers(0, 50, 20), "text": rng.integers(0, 50, 20)})
    overlap = rng.integers(0, 9, (6, 6))
    plots.overlap_heatmap(axes[0, 1], overlap, np.arange(6), rng.permutation(6))
    plots.overlap_distribution(axes[0, 2], rng.integers(0, 30, 20))
    plots.pca_scatter(axes[1, 0], rng.normal(size=(50, 8)), rng.normal(size=(80, 8)), n=40)
    plots.cosine_histograms(axes[1, 1], {"matched": rng.normal(0.3, 0.1, 200), "random": rng.normal(0, 0.1, 200)})
    plots.method_curves(axes[1, 2], pd.DataFrame({"pds": [1, 2], "random": [2, 3]}, index=pd.Index([0, 1], name="epoch")))
    fig.tight_layout()
    out["histograms_and_scatter"] = fig
    return out


@pytest.fixture(scope="module")
def drawn():
    figs = figures()
    yield figs
    plt.close("all")


@pytest.mark.parametrize("name", ["montage", "montage_kinds", "retrieval_examples", "rmean_bars", "plot_budget",
                                  "histograms_and_scatter"])
def test_all_text_is_at_least_9_pt(drawn, name):
    small = [(t.get_text()[:30], t.get_fontsize()) for t in drawn[name].findobj(Text)
             if t.get_visible() and t.get_text().strip() and t.get_fontsize() < plots.MIN_FONTSIZE]
    assert not small, f"{name}: text below {plots.MIN_FONTSIZE} pt: {small}"


def renderer(fig):
    """A drawn Agg renderer of `fig` (pyplot may have closed it, leaving it without a drawing canvas)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def text_boxes(fig):
    r = renderer(fig)
    return [(t.get_text(), t.get_window_extent(r)) for t in fig.texts if t.get_text().strip()]


def image_boxes(fig):
    r = renderer(fig)
    return [ax.get_window_extent(r) for ax in fig.axes if ax.images]


@pytest.mark.parametrize("name", ["montage", "montage_kinds", "retrieval_examples"])
def test_captions_sit_outside_the_images_and_inside_the_figure(drawn, name):
    fig = drawn[name]
    page = fig.bbox
    for text, box in text_boxes(fig):
        for image in image_boxes(fig):
            assert not box.overlaps(image), f"{name}: {text[:30]!r} is drawn over an image"
        assert page.x0 - 1 <= box.x0 and box.x1 <= page.x1 + 1 and page.y0 - 1 <= box.y0, f"{name}: {text[:30]!r} leaves the figure"
    boxes = text_boxes(fig)
    for i, (a, box_a) in enumerate(boxes):
        for b, box_b in boxes[i + 1:]:
            assert not box_a.overlaps(box_b), f"{name}: {a[:20]!r} overlaps {b[:20]!r}"


def test_montage_frames_synthetic_and_real_images_and_labels_them(drawn):
    fig = drawn["montage_kinds"]
    frames = [to_hex(ax.spines["top"].get_edgecolor()) for ax in fig.axes]
    assert frames == [to_hex(plots.IMAGE_KIND_COLOURS[k]) for k in ["synthetic", "real"] * 2]
    labels = [t.get_text() for t in fig.texts if t.get_text() in plots.IMAGE_KIND_COLOURS]
    assert labels == ["synthetic", "real"] * 2


def test_montage_rejects_bad_arguments():
    with pytest.raises(ValueError, match="kinds"):
        plots.montage(images(2), kinds=["synthetic"])
    with pytest.raises(ValueError, match="fake"):
        plots.montage(images(1), kinds=["fake"])
    with pytest.raises(ValueError, match="9 pt"):
        plots.montage(images(1), ["x"], fontsize=6)


@pytest.mark.parametrize("name", ["rmean_bars", "plot_budget", "histograms_and_scatter"])
def test_legends_never_cover_the_data(drawn, name):
    fig = drawn[name]
    r = renderer(fig)
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert legends
    for legend in legends:
        box = legend.get_window_extent(r)
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(r)), f"{name}: a legend lies on an axes"
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 + 1, f"{name}: a legend leaves the figure"


@pytest.mark.parametrize("name", ["montage", "montage_kinds", "retrieval_examples", "plot_budget"])
def test_figures_fit_a_notebook_column_so_they_are_shown_at_100_percent(drawn, name):
    assert drawn[name].get_figwidth() <= plots.MAX_WIDTH_INCHES + 1e-9


def test_a_wide_montage_shrinks_its_cells_not_its_text():
    fig = plots.montage(images(12), [CAPTION] * 12, ncols=12)
    assert fig.get_figwidth() <= plots.MAX_WIDTH_INCHES + 1e-9
    assert min(t.get_fontsize() for t in fig.texts) >= plots.MIN_FONTSIZE


def test_notebook_figures_fit_a_notebook_column():
    wide = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            for node in ast.walk(ast.parse("".join(cell["source"]))):
                if (isinstance(node, ast.keyword) and node.arg == "figsize" and isinstance(node.value, ast.Tuple)
                        and isinstance(node.value.elts[0], ast.Constant)
                        and node.value.elts[0].value > plots.MAX_WIDTH_INCHES):
                    wide.append(f"{path.name}: figsize={ast.unparse(node.value)}")
    assert not wide, f"wider than {plots.MAX_WIDTH_INCHES} in, so shown scaled down: {wide}"


def test_wrap_to_width_fits_and_keeps_every_word():
    from matplotlib.backends.backend_agg import RendererAgg

    renderer = RendererAgg(10, 10, 72)
    lines = plots.wrap_to_width(CAPTION + " supercalifragilisticexpialidociousness", 1.2, 9, max_lines=20,
                                renderer=renderer)
    for line in lines:
        assert plots._text_width_px(renderer, line, 9) <= 1.2 * 72
    assert "".join(lines).replace("-", "").replace(" ", "") == (CAPTION + "supercalifragilisticexpialidociousness").replace(" ", "")
    assert plots.wrap_to_width(CAPTION * 5, 1.2, 9, max_lines=3)[-1].endswith("…")
