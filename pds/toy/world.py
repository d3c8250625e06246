"""The toy world: a seeded generator of small images of coloured shapes with five varied, true captions each,
written in the Karpathy format (`dataset_toyworld.json` + `images/`) so `pds.data.load_dataset` reads it.

Serves the `toyworld` DVC stage (`python -m pds.toy.world`). `parse_caption` maps a caption back to the
attributes it mentions, so tests (and later analyses) can check that text and pixels agree.
"""

import argparse
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from pds.data import SPLITS, preprocess_caption, save_json, save_png
from pds.paths import resolve

SHAPES = ["circle", "square", "triangle", "diamond", "cross"]
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
SIZES = ["small", "large"]
COUNTS = [1, 2, 3]
BACKGROUNDS = ["white", "black", "gray", "striped"]
ARRANGEMENTS = ["single", "row", "column"]  # one object / several side by side / several stacked
# count 1: a cell of a 3x3 grid; a row: top/center/bottom; a column: left/center/right
POSITIONS = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"]
ATTRIBUTES = ["shape", "colour", "size", "count", "arrangement", "position", "background"]

# Saturated colours chosen far (RGB distance > 120) from every background tone, stripes included.
RGB = {"red": (220, 40, 40), "green": (30, 170, 50), "blue": (30, 80, 235),
       "yellow": (240, 210, 30), "purple": (160, 40, 220), "orange": (245, 130, 20)}
BACKGROUND_RGB = {"white": [(245, 245, 245)], "black": [(15, 15, 15)], "gray": [(128, 128, 128)],
                  "striped": [(220, 220, 220), (160, 160, 160)]}

_GRID = {"top": 0.27, "left": 0.27, "center": 0.5, "bottom": 0.73, "right": 0.73}  # cell centres, image fraction
_ALONG = {1: [0.5], 2: [0.31, 0.69], 3: [0.18, 0.5, 0.82]}  # object centres along a row / column
# object extent (image fraction) by (count > 1, size); chosen so 3 large objects plus jitter never overlap
_EXTENT = {(False, "small"): 0.24, (False, "large"): 0.42, (True, "small"): 0.19, (True, "large"): 0.28}
_SPLIT_CODE = {s: i for i, s in enumerate(SPLITS)}

# ----------------------------------------------------------------------------------------------------
# attributes and pixels


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def sample_attributes(rng: np.random.Generator) -> dict:
    """One image's canonical attributes (keys: ATTRIBUTES), drawn uniformly per attribute."""
    shape, colour, size = _pick(rng, SHAPES), _pick(rng, COLOURS), _pick(rng, SIZES)
    count = _pick(rng, COUNTS)
    if count == 1:
        arrangement, position = "single", _pick(rng, POSITIONS)
    else:
        arrangement = _pick(rng, ["row", "column"])
        position = _pick(rng, ["top", "center", "bottom"] if arrangement == "row" else ["left", "center", "right"])
    background = _pick(rng, BACKGROUNDS)
    return {"shape": shape, "colour": colour, "size": size, "count": count, "arrangement": arrangement,
            "position": position, "background": background}


def _centres(attrs: dict, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Object centres (x, y) as image fractions, with a small random offset of the whole group."""
    words = attrs["position"].split()
    if attrs["arrangement"] == "single":
        x = _GRID[next((w for w in words if w in ("left", "right")), "center")]
        y = _GRID[next((w for w in words if w in ("top", "bottom")), "center")]
        dx, dy = rng.uniform(-0.035, 0.035, size=2)
        return [(x + dx, y + dy)]
    across = _GRID[attrs["position"]] + rng.uniform(-0.035, 0.035)  # the row's y or the column's x
    shift = rng.uniform(-0.02, 0.02)
    jitter = rng.uniform(-0.006, 0.006, size=attrs["count"])
    along = [a + shift + j for a, j in zip(_ALONG[attrs["count"]], jitter, strict=True)]
    return [(a, across) for a in along] if attrs["arrangement"] == "row" else [(across, a) for a in along]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, s: float, fill) -> None:
    h = s / 2
    if shape == "circle":
        draw.ellipse([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif shape == "square":
        q = 0.45 * s  # a little smaller than the circle's box so both look about as heavy
        draw.rectangle([cx - q, cy - q, cx + q, cy + q], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)], fill=fill)
    elif shape == "diamond":
        w = 0.38 * s  # narrower than tall, so it is never a rotated square at 32 px
        draw.polygon([(cx, cy - h), (cx + w, cy), (cx, cy + h), (cx - w, cy)], fill=fill)
    elif shape == "cross":
        a = s / 6  # arms one third of the extent wide
        draw.rectangle([cx - h, cy - a, cx + h, cy + a], fill=fill)
        draw.rectangle([cx - a, cy - h, cx + a, cy + h], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; use one of {SHAPES}.")


def draw_image(attrs: dict, image_size: int = 32, rng: np.random.Generator | None = None,
               supersample: int = 4) -> Image.Image:
    """Draw the scene described by `attrs` as an (image_size, image_size) RGB image.

    Shapes are drawn at `supersample`x resolution and downsampled with a Lanczos filter (anti-aliased
    edges). `rng` adds the jitter (group offset, +-5% size, slight colour and background tone) that keeps
    two images with the same attributes from being pixel-identical.
    """
    if image_size < 16:
        raise ValueError(f"image_size={image_size} is too small for recognisable shapes; use >= 16.")
    for key, allowed in (("shape", SHAPES), ("colour", COLOURS), ("size", SIZES), ("count", COUNTS),
                         ("background", BACKGROUNDS), ("arrangement", ARRANGEMENTS), ("position", POSITIONS)):
        if attrs.get(key) not in allowed:
            raise ValueError(f"attribute {key}={attrs.get(key)!r} is not one of {allowed}.")
    rng = rng if rng is not None else np.random.default_rng(0)
    S = image_size * supersample
    tone = int(rng.integers(-6, 7))
    tones = [np.clip(np.array(c) + tone, 0, 255).astype(np.uint8) for c in BACKGROUND_RGB[attrs["background"]]]
    canvas = np.empty((S, S, 3), dtype=np.uint8)  # (S, S, 3)
    if len(tones) == 1:
        canvas[:] = tones[0]
    else:  # diagonal stripes, 8 periods across the image whatever its size
        yy, xx = np.mgrid[0:S, 0:S]
        band = ((xx + yy) * 16 // S) % 2  # (S, S) in {0, 1}
        canvas[:] = np.where(band[..., None] == 0, tones[0], tones[1])
    img = Image.fromarray(canvas, mode="RGB")
    draw = ImageDraw.Draw(img)
    fill = tuple(int(v) for v in np.clip(np.array(RGB[attrs["colour"]]) + rng.integers(-12, 13, size=3), 0, 255))
    extent = _EXTENT[(attrs["count"] > 1, attrs["size"])] * rng.uniform(0.95, 1.05) * S
    for cx, cy in _centres(attrs, rng):
        _draw_shape(draw, attrs["shape"], cx * S, cy * S, extent, fill)
    return img.resize((image_size, image_size), Image.Resampling.LANCZOS)


# ----------------------------------------------------------------------------------------------------
# captions: words used to write them, and the same words read back

_SHAPE_SYN = {"circle": [("circle", "circles"), ("disc", "discs"), ("disk", "disks")],
              "square": [("square", "squares"), ("box", "boxes"), ("block", "blocks")],
              "triangle": [("triangle", "triangles")],
              "diamond": [("diamond", "diamonds"), ("rhombus", "rhombuses")],
              "cross": [("cross", "crosses"), ("plus sign", "plus signs")]}
_COLOUR_SYN = {"red": ["red"], "green": ["green"], "blue": ["blue"], "yellow": ["yellow"],
               "purple": ["purple", "violet"], "orange": ["orange"]}
_SIZE_SYN = {"small": ["small", "little", "tiny"], "large": ["large", "big", "huge"]}
_BACKGROUND_SYN = {"white": ["white"], "black": ["black"], "gray": ["gray", "grey"], "striped": ["striped", "stripy"]}
_VERTICAL_SYN = {"top": ["top", "upper"], "bottom": ["bottom", "lower"]}
_COUNT_WORDS = {"one": 1, "single": 1, "lone": 1, "two": 2, "pair": 2, "three": 3, "trio": 3}
_ROW_WORDS = ["row", "horizontal", "horizontally", "side by side", "next to each other"]
_COLUMN_WORDS = ["column", "vertical", "vertically", "stacked"]
_CENTER_WORDS = ["center", "centre", "middle", "central", "centered", "centred"]


def _lexicon() -> dict[tuple[str, ...], tuple[str, object]]:
    """Phrase (tuple of tokens) -> (slot, value). Every word belongs to exactly one slot, so parsing is exact."""
    lex = {}

    def add(phrase: str, slot: str, value) -> None:
        key = tuple(phrase.split())
        assert key not in lex or lex[key] == (slot, value), f"ambiguous caption word {phrase!r}"
        lex[key] = (slot, value)

    for shape, forms in _SHAPE_SYN.items():
        for singular, plural in forms:
            add(singular, "shape", (shape, False))
            add(plural, "shape", (shape, True))
    for slot, table in (("colour", _COLOUR_SYN), ("size", _SIZE_SYN), ("background", _BACKGROUND_SYN),
                        ("vertical", _VERTICAL_SYN)):
        for value, words in table.items():
            for w in words:
                add(w, slot, value)
    add("stripes", "background", "striped")
    for w in ("left", "right"):
        add(w, "horizontal", w)
    for w, n in _COUNT_WORDS.items():
        add(w, "count", n)
    for w in _ROW_WORDS:
        add(w, "arrangement", "row")
    for w in _COLUMN_WORDS:
        add(w, "arrangement", "column")
    for w in _CENTER_WORDS:
        add(w, "center", True)
    return lex


_LEXICON = _lexicon()
_MAX_PHRASE = max(len(k) for k in _LEXICON)


def parse_caption(text: str) -> dict:
    """The canonical attributes a caption mentions (a subset of ATTRIBUTES).

    Reads raw or preprocessed captions. `count` comes from a number word (one, two, pair, trio, ...) or,
    failing that, from a singular shape noun (count 1). `position` is the grid name ("top left", "center",
    ...) built from the vertical/horizontal/centre words. Raises ValueError when the caption contradicts
    itself (two colours, two shapes, ...), which a toy caption never does.
    """
    tokens = preprocess_caption(text.replace("-", " "), max_words=0).split()
    found: dict[str, object] = {}
    i = 0
    while i < len(tokens):
        for n in range(min(_MAX_PHRASE, len(tokens) - i), 0, -1):  # longest phrase first
            hit = _LEXICON.get(tuple(tokens[i:i + n]))
            if hit is not None:
                slot, value = hit
                if slot in found and found[slot] != value:
                    raise ValueError(f"caption {text!r} mentions both {found[slot]!r} and {value!r} as {slot}.")
                found[slot] = value
                i += n
                break
        else:
            i += 1
    out: dict[str, object] = {}
    if "shape" in found:
        shape, plural = found["shape"]
        out["shape"] = shape
        if "count" not in found and not plural:
            out["count"] = 1
    for slot in ("colour", "size", "count", "arrangement", "background"):
        if slot in found:
            out[slot] = found[slot]
    if "vertical" in found or "horizontal" in found:
        out["position"] = " ".join(str(found[s]) for s in ("vertical", "horizontal") if s in found)
    elif "center" in found:
        out["position"] = "center"
    return out


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _shape_word(rng, shape: str, plural: bool) -> str:
    return _pick(rng, _SHAPE_SYN[shape])[int(plural)]


def _noun_phrase(rng, attrs: dict, size: bool, colour: bool = True) -> str:
    """'a small red circle', 'a pair of big violet discs', 'three blue boxes' ..."""
    count = attrs["count"]
    adjectives = ([_pick(rng, _SIZE_SYN[attrs["size"]])] if size else []) + \
                 ([_pick(rng, _COLOUR_SYN[attrs["colour"]])] if colour else [])
    words = " ".join(adjectives + [_shape_word(rng, attrs["shape"], count > 1)])
    if count == 1:
        det = _pick(rng, ["a", "a", "one", "a single", "a lone", "just one"])
        return f"{_article(words) if det == 'a' else det} {words}"
    number = {2: ["two", "two", "a pair of"], 3: ["three", "three", "a trio of", "a group of three"]}[count]
    return f"{_pick(rng, number)} {words}"


def _position_phrase(rng, attrs: dict) -> str:
    """Where the object(s) are: 'in the upper left corner', 'stacked vertically on the left', ..."""
    pos = attrs["position"]
    words = pos.split()
    v = next((w for w in words if w in _VERTICAL_SYN), None)
    h = next((w for w in words if w in ("left", "right")), None)
    if attrs["arrangement"] == "single":
        if v and h:
            vw = _pick(rng, _VERTICAL_SYN[v])
            return _pick(rng, [f"in the {vw} {h} corner", f"at the {vw} {h}", f"near the {vw} {h} corner",
                               f"in the {vw} {h} of the image", f"toward the {vw} {h}"])
        if v:
            part = "upper" if v == "top" else "lower"
            return _pick(rng, [f"at the {v}", f"near the {v}", f"at the {v} of the image", f"along the {v} edge",
                               f"in the {part} part of the picture"])
        if h:
            return _pick(rng, [f"on the {h}", f"on the {h} side", f"at the {h} edge", f"to the {h}",
                               f"in the {h} part of the image"])
        return _pick(rng, ["in the center", "in the middle", "in the centre", "at the center of the image",
                           "in the middle of the frame", "centered in the frame"])
    if attrs["arrangement"] == "row":
        arrange = ["side by side", "in a row", "in a horizontal row", "next to each other",
                   "lined up horizontally", "in a horizontal line"]
        where = {"top": ["along the top", "across the top", "at the top", "near the top of the image"],
                 "bottom": ["along the bottom", "across the bottom", "at the bottom", "near the bottom of the image"],
                 "center": ["across the middle", "through the center", "in the middle", "across the center"]}[pos]
    else:
        arrange = ["stacked vertically", "in a column", "in a vertical column", "in a vertical line",
                   "lined up vertically", "stacked in a column"]
        where = {"left": ["on the left", "along the left side", "at the left", "down the left side"],
                 "right": ["on the right", "along the right side", "at the right", "down the right side"],
                 "center": ["down the middle", "in the center", "down the center", "in the middle"]}[pos]
    r = rng.random()
    if r < 0.6:
        return f"{_pick(rng, arrange)} {_pick(rng, where)}"
    return _pick(rng, arrange) if r < 0.85 else _pick(rng, where)


def _background_phrase(rng, attrs: dict) -> str:
    b = _pick(rng, _BACKGROUND_SYN[attrs["background"]])
    noun = _pick(rng, ["background", "backdrop"])
    forms = [f"on a {b} {noun}", f"against a {b} {noun}", f"over a {b} {noun}", f"with a {b} {noun}"]
    if attrs["background"] == "striped":
        forms += ["on a background of diagonal stripes", "against diagonal stripes"]
    else:
        forms += [f"on {b}", f"on a plain {b} {noun}"]
    return _pick(rng, forms)


def _background_noun(rng, attrs: dict) -> str:
    b = _pick(rng, _BACKGROUND_SYN[attrs["background"]])
    plain = "plain " if attrs["background"] != "striped" and rng.random() < 0.3 else ""
    return f"{_article(plain or b)} {plain}{b} {_pick(rng, ['background', 'backdrop'])}"


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _caption(rng, attrs: dict, template: int) -> str:
    """One caption from template `template` (0..N_TEMPLATES-1), optional attributes included at random."""
    plural = attrs["count"] > 1
    use_size, use_pos, use_bg = rng.random() < 0.6, rng.random() < 0.75, rng.random() < 0.6
    np_ = _noun_phrase(rng, attrs, use_size)
    pos = _position_phrase(rng, attrs) if use_pos else ""
    bg = _background_phrase(rng, attrs) if use_bg else ""
    if template == 0:
        return _join(np_, pos, bg)
    if template == 1:
        return _join("there are" if plural else "there is", np_, pos, bg)
    if template == 2:
        lead = _pick(rng, ["a picture of", "a photo of", "an image of", "a drawing of", "a simple drawing of"])
        return _join(lead, np_, pos, bg)
    if template == 3:  # background first: 'a white backdrop with two red circles side by side'
        return _join(_background_noun(rng, attrs), "with", np_, pos or _position_phrase(rng, attrs))
    if template == 4:  # terse list: 'red circle, small, upper left, white background'
        colour = _pick(rng, _COLOUR_SYN[attrs["colour"]])
        head = f"{colour} {_shape_word(rng, attrs['shape'], plural)}"
        if plural:
            head = f"{_pick(rng, {2: ['two', 'pair of'], 3: ['three', 'trio of']}[attrs['count']])} {head}"
        size = _pick(rng, _SIZE_SYN[attrs["size"]])
        where = _position_phrase(rng, attrs)
        return ", ".join([head, size, where, _background_noun(rng, attrs).split(" ", 1)[1]])
    if template == 5:  # position first
        return _join(f"{pos or _position_phrase(rng, attrs)},", np_, bg)
    if template == 6:
        verb = _pick(rng, ["sit", "are placed", "appear", "are drawn"] if plural else
                     ["sits", "is placed", "appears", "is drawn", "can be seen"])
        return _join(np_, verb, pos or _position_phrase(rng, attrs), bg)
    if template == 7:  # colour after the noun: 'three squares, all of them blue, stacked vertically'
        bare = _noun_phrase(rng, attrs, use_size, colour=False)
        colour = _pick(rng, _COLOUR_SYN[attrs["colour"]])
        tail = _pick(rng, [f"all {colour}", f"all of them {colour}", f"each of them {colour}"]) if plural else \
            _pick(rng, [f"coloured {colour}", f"colored {colour}", f"painted {colour}", f"in {colour}"])
        return _join(f"{bare} {tail}" + ("," if pos or bg else ""), pos, bg)
    if template == 8:
        return _join(_pick(rng, ["you can see", "we see", "here we see"]), np_, pos, bg)
    if template == 9:
        lead = _pick(rng, ["this image shows", "the picture shows", "the image contains", "this picture has"])
        return _join(lead, np_, pos, bg)
    if template == 10:  # 'only a tiny orange cross on black, nothing else'
        return _join(np_, pos, bg or _background_phrase(rng, attrs)) + _pick(rng, [", nothing else", " and nothing else"])
    raise ValueError(f"template must be in 0..{N_TEMPLATES - 1}, got {template}.")


N_TEMPLATES = 11


def make_captions(attrs: dict, rng: np.random.Generator, n: int = 5) -> list[str]:
    """`n` different captions of one image, each from a different template (while n <= N_TEMPLATES), each
    naming shape, colour and count and possibly size, position/arrangement and background; 5-18 words."""
    if n < 1:
        raise ValueError(f"n={n} captions requested; use n >= 1.")
    order = [int(t) for t in rng.permutation(N_TEMPLATES)]
    captions: list[str] = []
    for k in range(n):
        template = order[k % N_TEMPLATES]
        for _ in range(50):  # redraw optional parts until the caption is new and of a natural length
            cap = re.sub(r"\s+", " ", _caption(rng, attrs, template)).strip()
            if cap not in captions and 5 <= len(cap.split()) <= 18:
                break
        captions.append(cap)
    return captions


# ----------------------------------------------------------------------------------------------------
# the dataset


def _image_rngs(seed: int, split: str, index: int) -> list[np.random.Generator]:
    # keyed by (split, index within split): the test set stays the same when n_train changes
    return [np.random.default_rng(s) for s in np.random.SeedSequence([seed, _SPLIT_CODE[split], index]).spawn(3)]


def generate_toyworld(out_dir, n_train: int = 10000, n_val: int = 1000, n_test: int = 1000,
                      image_size: int = 32, seed: int = 0) -> Path:
    """Write the toy world under `out_dir`: `images/{imgid:06d}.png` and `dataset_toyworld.json` (Karpathy
    format, each image entry with its canonical `attributes`). Returns the annotation file's path.

    Same arguments => byte-identical files. Image ids run train, val, test; each image is drawn from its own
    generator keyed by (seed, split, index in split). The annotation file is removed first and written last,
    so an interrupted run never looks complete; stale PNGs from an earlier, larger run are deleted.
    """
    for name, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
            raise ValueError(f"{name}={value!r} must be a positive integer number of images.")
    if not isinstance(image_size, int | np.integer) or image_size < 16:
        raise ValueError(f"image_size={image_size!r} must be an integer >= 16 (shapes are unrecognisable below).")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer.")
    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    ann_file = out_dir / "dataset_toyworld.json"
    ann_file.unlink(missing_ok=True)
    images_dir.mkdir(parents=True, exist_ok=True)

    entries, keep = [], set()
    plan = [(split, k) for split, n in zip(SPLITS, (n_train, n_val, n_test), strict=True) for k in range(n)]
    for imgid, (split, k) in enumerate(tqdm(plan, desc="toyworld", unit="img")):
        attr_rng, caption_rng, draw_rng = _image_rngs(int(seed), split, k)
        attrs = sample_attributes(attr_rng)
        captions = make_captions(attrs, caption_rng, n=5)
        filename = f"{imgid:06d}.png"
        save_png(images_dir / filename, draw_image(attrs, int(image_size), draw_rng))
        keep.add(filename)
        sentids = list(range(5 * imgid, 5 * imgid + 5))
        entries.append({
            "imgid": imgid, "filename": filename, "filepath": "images", "split": split, "sentids": sentids,
            "sentences": [{"raw": c, "tokens": preprocess_caption(c, max_words=0).split(), "imgid": imgid,
                           "sentid": s} for c, s in zip(captions, sentids, strict=True)],
            "attributes": attrs,
        })
    for path in images_dir.iterdir():  # leftovers of an earlier run with more images, or of an interrupted write
        if path.is_file() and path.name not in keep:
            path.unlink()
    save_json(ann_file, {"dataset": "toyworld", "images": entries}, indent=None)  # 32 MB indented
    return ann_file


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate the toy world dataset (Karpathy format).")
    parser.add_argument("--out", default="data/raw/toyworld", help="output folder (relative to the repo root)")
    parser.add_argument("--n-train", type=int, default=10000)
    parser.add_argument("--n-val", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    ann = generate_toyworld(resolve(args.out), args.n_train, args.n_val, args.n_test, args.image_size, args.seed)
    print(f"wrote {ann}")


if __name__ == "__main__":
    main()
