"""The toy world: a seeded generator of small images of coloured shapes with five varied, true captions each,
written in the Karpathy format (`dataset_toyworld.json` + `images/`) so `pds.data.load_dataset` reads it.

Serves the `toyworld` DVC stage (`python -m pds.toy.world`). `parse_caption` maps a caption back to the
attributes it mentions, so tests (and later analyses) can check that text and pixels agree.

A second, *realistic* world comes from the same generator with the knobs below switched on: the things real
captioned data (Flickr30k, COCO) has and today's world lacks. Every knob's default reproduces today's world
byte for byte (every PNG and `dataset_toyworld.json`), because each knob draws its random numbers from a
stream of its own, derived from the seed and keyed by the knob, and only when it is switched on; with a knob
on, everything it does not touch stays as in today's world (same scenes, same jitter). The annotation file
records the knobs that are not at their default (`"knobs"`), so today's file is unchanged.

    flag (params.yaml `toyworld:` leaf)  default  what it does
    --caption-mention-rate               legacy   `legacy`: today's captions (shape, colour and count always;
                                                  size 60 %, position 75 %, background 60 %; 11 templates).
                                                  A number m in [0, 1]: partial captions by annotators of three
                                                  styles (terse / plain / verbose, mention rate x0.5 / x1 / x1.5,
                                                  capped at 1): each names the main object (shape and colour)
                                                  and each of count, size, position, background and the
                                                  secondary object with probability m x style. A single object
                                                  always states its count ("a red circle"), a group may not
                                                  ("red circles"). `legacy` with --caption-noise, -variation
                                                  or --secondary-rate on: the annotators' captions with today's
                                                  rates as the base (secondary object 50 %).
    --caption-noise                      0        probability that each attribute a caption states is worded
                                                  wrong (another value of that attribute: "blue" for red,
                                                  "two" for three, "top" for bottom, ...).
    --caption-variation                  0        probability of a rare synonym for each attribute word
                                                  ("crimson", "lozenge", "giant") and of a changed word order
                                                  (position or background first); never changes what is stated.
    --secondary-rate                     0        probability that an image has a secondary object (a small
                                                  single object of another colour), which captions may mention
                                                  at the end ("... beside a blue star").
    --mismatch-rate                      0        fraction p of *training* images that carry another training
                                                  image's five captions (round(p * n_train) images, a cycle:
                                                  every caption still appears once); val and test never.
    --clutter                            0        mean number (Poisson, at most 4) of small distractor objects
                                                  per image, of colours other than the main and secondary
                                                  object's; drawn, never mentioned.
    --background-texture                 0        strength (0..1) of a grey texture on the background (smooth
                                                  blotches, a gradient, grain; std about 19 grey levels at 1).
    --zipf-exponent                      0        s: the main object's (shape, colour) concept has frequency
                                                  proportional to rank^-s, ranks a seeded permutation of the
                                                  concepts (0: uniform). Train, val and test share it; the
                                                  secondary object and the clutter are drawn from it too.
    --n-shapes / --n-colours             5 / 6    size of the vocabulary: the first n of ALL_SHAPES (up to 15)
                                                  and ALL_COLOURS (up to 11); today's SHAPES and COLOURS first.

With a knob on, entries may carry more than today: `attributes` gains `secondary_shape` / `secondary_colour`
(None without one) when --secondary-rate > 0, `objects` lists the secondary and clutter objects (role,
shape, colour, centre, extent) when either is on, `caption_imgid` names the image whose captions an entry
carries when --mismatch-rate > 0, and the file's `concepts` lists [shape, colour, probability] by rank when
the concept distribution is not today's uniform 5 x 6.
"""

import argparse
import functools
import math
import re
from dataclasses import dataclass, fields
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
# the long-tail world's larger vocabulary (--n-shapes / --n-colours); today's world uses the first 5 / 6
EXTRA_SHAPES = ["star", "ring", "heart", "arrow", "semicircle", "crescent", "rectangle", "oval", "pentagon",
                "hourglass"]
EXTRA_COLOURS = ["pink", "cyan", "brown", "lime", "teal"]
ALL_SHAPES = SHAPES + EXTRA_SHAPES
ALL_COLOURS = COLOURS + EXTRA_COLOURS
SECONDARY_ATTRIBUTES = ["secondary_shape", "secondary_colour"]  # stated by captions when --secondary-rate > 0

# Saturated colours chosen far (RGB distance > 120) from every background tone, stripes included.
RGB = {"red": (220, 40, 40), "green": (30, 170, 50), "blue": (30, 80, 235),
       "yellow": (240, 210, 30), "purple": (160, 40, 220), "orange": (245, 130, 20),
       # extra colours: also > 120 from every background tone, and >= 88 from each other colour (today's
       # closest pair, yellow and orange, is 81 apart)
       "pink": (240, 60, 170), "cyan": (20, 200, 210), "brown": (140, 70, 20), "lime": (150, 230, 30),
       "teal": (0, 128, 128)}
BACKGROUND_RGB = {"white": [(245, 245, 245)], "black": [(15, 15, 15)], "gray": [(128, 128, 128)],
                  "striped": [(220, 220, 220), (160, 160, 160)]}

_GRID = {"top": 0.27, "left": 0.27, "center": 0.5, "bottom": 0.73, "right": 0.73}  # cell centres, image fraction
_ALONG = {1: [0.5], 2: [0.31, 0.69], 3: [0.18, 0.5, 0.82]}  # object centres along a row / column
# object extent (image fraction) by (count > 1, size); chosen so 3 large objects plus jitter never overlap
_EXTENT = {(False, "small"): 0.24, (False, "large"): 0.42, (True, "small"): 0.19, (True, "large"): 0.28}
_SPLIT_CODE = {s: i for i, s in enumerate(SPLITS)}
# extents of the extra objects: a secondary object smaller than any single main object (0.24), so the main
# object stays the salient one; distractors smaller still (about 4 px at 32 px)
SECONDARY_EXTENT = 0.17
CLUTTER_EXTENT = 0.13
MAX_CLUTTER = 4
ANN_FILE = "dataset_toyworld.json"  # every generated world's annotation file, whatever its folder's name

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


def _nominal_centres(attrs: dict) -> list[tuple[float, float]]:
    """Object centres (x, y) before jitter: where `_centres` puts them with every random offset at zero."""
    words = attrs["position"].split()
    if attrs["arrangement"] == "single":
        return [(_GRID[next((w for w in words if w in ("left", "right")), "center")],
                 _GRID[next((w for w in words if w in ("top", "bottom")), "center")])]
    across = _GRID[attrs["position"]]
    along = _ALONG[attrs["count"]]
    return [(a, across) for a in along] if attrs["arrangement"] == "row" else [(across, a) for a in along]


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


def _regular(cx: float, cy: float, r: float, n: int, start: float = -math.pi / 2) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(start + 2 * math.pi * k / n), cy + r * math.sin(start + 2 * math.pi * k / n))
            for k in range(n)]


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
    # the extra shapes (--n-shapes > 5), each inside the same s x s box, each with an outline none of the
    # others has at 32 px (spikes, a hole, lobes, a point, a flat side, a bite, an aspect ratio, a waist)
    elif shape == "star":
        tips, notches = _regular(cx, cy, h, 5), _regular(cx, cy, 0.45 * h, 5, -math.pi / 2 + math.pi / 5)
        draw.polygon([p for pair in zip(tips, notches, strict=True) for p in pair], fill=fill)
    elif shape == "ring":
        draw.ellipse([cx - h, cy - h, cx + h, cy + h], outline=fill, width=max(1, round(s / 4)))
    elif shape == "heart":  # the classic parametric heart, scaled into the box
        t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        x, y = 16 * np.sin(t) ** 3, 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
        k = h / 16.5
        draw.polygon([(cx + k * a, cy - k * (b + 2.5)) for a, b in zip(x, y, strict=True)], fill=fill)
    elif shape == "arrow":  # pointing right
        a = s / 9
        draw.polygon([(cx - h, cy - a), (cx + 0.05 * h, cy - a), (cx + 0.05 * h, cy - 0.65 * h), (cx + h, cy),
                      (cx + 0.05 * h, cy + 0.65 * h), (cx + 0.05 * h, cy + a), (cx - h, cy + a)], fill=fill)
    elif shape == "semicircle":  # flat side down
        draw.pieslice([cx - h, cy - 0.5 * h, cx + h, cy + 1.5 * h], 180, 360, fill=fill)
    elif shape == "crescent":  # a disc with a disc bitten out of its right side, as a polygon
        d, r1 = 0.45 * h, 0.85 * h
        t0 = math.acos((h * h + d * d - r1 * r1) / (2 * h * d))
        p0 = math.atan2(h * math.sin(t0), h * math.cos(t0) - d)
        ox = cx + 0.23 * h  # centres the crescent's box on cx
        outer = [(ox + h * math.cos(t), cy + h * math.sin(t)) for t in np.linspace(t0, 2 * math.pi - t0, 24)]
        inner = [(ox + d + r1 * math.cos(t), cy + r1 * math.sin(t))
                 for t in np.linspace(2 * math.pi - p0, p0, 24)]
        draw.polygon(outer + inner, fill=fill)
    elif shape == "rectangle":  # twice as wide as tall
        draw.rectangle([cx - h, cy - 0.25 * s, cx + h, cy + 0.25 * s], fill=fill)
    elif shape == "oval":  # upright
        draw.ellipse([cx - 0.3 * s, cy - h, cx + 0.3 * s, cy + h], fill=fill)
    elif shape == "pentagon":
        draw.polygon(_regular(cx, cy + 0.1 * h, 1.05 * h, 5), fill=fill)
    elif shape == "hourglass":  # two triangles tip to tip
        w = 0.4 * s
        draw.polygon([(cx - w, cy - h), (cx + w, cy - h), (cx, cy)], fill=fill)
        draw.polygon([(cx - w, cy + h), (cx + w, cy + h), (cx, cy)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; use one of {ALL_SHAPES}.")


def _texture(S: int, strength: float, rng: np.random.Generator) -> np.ndarray:
    """A grey-level offset field (S, S): smooth blotches, a linear gradient and grain, std about 19 * strength.

    Grey only, so the background keeps its name and every object its colour word; real photographs have such
    texture where the toy world has flat tones."""
    coarse = rng.normal(size=(6, 6)).astype(np.float32)
    blotches = np.array(Image.fromarray(coarse).resize((S, S), Image.Resampling.BICUBIC), dtype=np.float32)
    blotches /= blotches.std() + 1e-6
    angle, slope = rng.uniform(0, 2 * math.pi), rng.uniform(0.5, 1.0)
    yy, xx = (np.mgrid[0:S, 0:S] + 0.5) / S - 0.5
    gradient = 2 * slope * (xx * math.cos(angle) + yy * math.sin(angle))
    grain = 0.5 * rng.normal(size=(S, S))
    return (16 * strength * (blotches + gradient + grain)).astype(np.float32)


def draw_image(attrs: dict, image_size: int = 32, rng: np.random.Generator | None = None,
               supersample: int = 4) -> Image.Image:
    """Draw the scene described by `attrs` as an (image_size, image_size) RGB image.

    Shapes are drawn at `supersample`x resolution and downsampled with a Lanczos filter (anti-aliased
    edges). `rng` adds the jitter (group offset, +-5% size, slight colour and background tone) that keeps
    two images with the same attributes from being pixel-identical.
    """
    return draw_scene(attrs, image_size, rng, supersample)


def draw_scene(attrs: dict, image_size: int = 32, rng: np.random.Generator | None = None, supersample: int = 4,
               objects=(), texture: float = 0.0, texture_rng: np.random.Generator | None = None) -> Image.Image:
    """`draw_image` plus the realistic world's extras: `objects` (dicts with shape, colour, x, y, extent as
    image fractions and optionally rgb, the jittered colour: the secondary object and the clutter) and a
    background `texture` of that strength, drawn from `texture_rng`. `rng` is consumed exactly as
    `draw_image` consumes it, so the main objects of a cluttered image sit where they sit in today's image."""
    if image_size < 16:
        raise ValueError(f"image_size={image_size} is too small for recognisable shapes; use >= 16.")
    for key, allowed in (("shape", ALL_SHAPES), ("colour", ALL_COLOURS), ("size", SIZES), ("count", COUNTS),
                         ("background", BACKGROUNDS), ("arrangement", ARRANGEMENTS), ("position", POSITIONS)):
        if attrs.get(key) not in allowed:
            raise ValueError(f"attribute {key}={attrs.get(key)!r} is not one of {allowed}.")
    if texture and texture_rng is None:
        raise ValueError("a background texture needs its own generator, texture_rng.")
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
    if texture:
        canvas = np.clip(canvas + _texture(S, texture, texture_rng)[..., None], 0, 255).astype(np.uint8)
    img = Image.fromarray(canvas, mode="RGB")
    draw = ImageDraw.Draw(img)
    fill = tuple(int(v) for v in np.clip(np.array(RGB[attrs["colour"]]) + rng.integers(-12, 13, size=3), 0, 255))
    extent = _EXTENT[(attrs["count"] > 1, attrs["size"])] * rng.uniform(0.95, 1.05) * S
    for obj in objects:  # the secondary object and the clutter: placed clear of the main objects
        _draw_shape(draw, obj["shape"], obj["x"] * S, obj["y"] * S, obj["extent"] * S,
                    tuple(int(v) for v in obj.get("rgb", RGB[obj["colour"]])))
    for cx, cy in _centres(attrs, rng):
        _draw_shape(draw, attrs["shape"], cx * S, cy * S, extent, fill)
    return img.resize((image_size, image_size), Image.Resampling.LANCZOS)


# ----------------------------------------------------------------------------------------------------
# captions: words used to write them, and the same words read back

# today's words come first in every list: today's captions pick from these lists by index, so a list of
# today's vocabulary must never grow (new words for today's values go to the _RARE_* tables)
_SHAPE_SYN = {"circle": [("circle", "circles"), ("disc", "discs"), ("disk", "disks")],
              "square": [("square", "squares"), ("box", "boxes"), ("block", "blocks")],
              "triangle": [("triangle", "triangles")],
              "diamond": [("diamond", "diamonds"), ("rhombus", "rhombuses")],
              "cross": [("cross", "crosses"), ("plus sign", "plus signs")],
              "star": [("star", "stars")], "ring": [("ring", "rings"), ("hoop", "hoops")],
              "heart": [("heart", "hearts")], "arrow": [("arrow", "arrows")],
              "semicircle": [("semicircle", "semicircles")], "crescent": [("crescent", "crescents"), ("moon", "moons")],
              "rectangle": [("rectangle", "rectangles"), ("bar", "bars")],
              "oval": [("oval", "ovals"), ("ellipse", "ellipses")], "pentagon": [("pentagon", "pentagons")],
              "hourglass": [("hourglass", "hourglasses")]}
_COLOUR_SYN = {"red": ["red"], "green": ["green"], "blue": ["blue"], "yellow": ["yellow"],
               "purple": ["purple", "violet"], "orange": ["orange"],
               "pink": ["pink"], "cyan": ["cyan", "aqua"], "brown": ["brown"], "lime": ["lime"], "teal": ["teal"]}
_SIZE_SYN = {"small": ["small", "little", "tiny"], "large": ["large", "big", "huge"]}
_BACKGROUND_SYN = {"white": ["white"], "black": ["black"], "gray": ["gray", "grey"], "striped": ["striped", "stripy"]}
_VERTICAL_SYN = {"top": ["top", "upper"], "bottom": ["bottom", "lower"]}
_COUNT_WORDS = {"one": 1, "single": 1, "lone": 1, "two": 2, "pair": 2, "three": 3, "trio": 3}
_ROW_WORDS = ["row", "horizontal", "horizontally", "side by side", "next to each other"]
_COLUMN_WORDS = ["column", "vertical", "vertically", "stacked"]
_CENTER_WORDS = ["center", "centre", "middle", "central", "centered", "centred"]
# rare synonyms (--caption-variation): real annotators' less common words for the same value
_RARE_SHAPE_SYN = {"circle": [("dot", "dots")], "square": [("tile", "tiles")], "triangle": [("wedge", "wedges")],
                   "diamond": [("lozenge", "lozenges")], "star": [("asterisk", "asterisks")],
                   "rectangle": [("slab", "slabs")], "heart": [("love heart", "love hearts")]}
_RARE_COLOUR_SYN = {"red": ["crimson", "scarlet"], "green": ["emerald"], "blue": ["azure", "cobalt"],
                    "yellow": ["golden", "lemon"], "purple": ["lilac", "lavender"], "orange": ["tangerine", "amber"],
                    "pink": ["fuchsia"], "cyan": ["turquoise"], "brown": ["chocolate"], "lime": ["chartreuse"]}
_RARE_SIZE_SYN = {"small": ["miniature", "smallish", "teeny"], "large": ["giant", "enormous", "oversized"]}
_RARE_BACKGROUND_SYN = {"white": ["ivory"], "black": ["ebony"], "gray": ["silver", "slate"], "striped": ["banded"]}
# a caption's clause about the secondary object starts with one of these and ends the caption
_SECONDARY_MARKERS = ["beside", "alongside", "together with", "as well as", "and also"]


def shape_forms() -> dict[str, list[tuple[str, str]]]:
    """Every (singular, plural) form of every shape a caption may use, rare synonyms included."""
    return {s: _SHAPE_SYN[s] + _RARE_SHAPE_SYN.get(s, []) for s in ALL_SHAPES}


def _lexicon() -> dict[tuple[str, ...], tuple[str, object]]:
    """Phrase (tuple of tokens) -> (slot, value). Every word belongs to exactly one slot, so parsing is exact."""
    lex = {}

    def add(phrase: str, slot: str, value) -> None:
        key = tuple(phrase.split())
        assert key not in lex or lex[key] == (slot, value), f"ambiguous caption word {phrase!r}"
        lex[key] = (slot, value)

    for shape, forms in shape_forms().items():
        for singular, plural in forms:
            add(singular, "shape", (shape, False))
            add(plural, "shape", (shape, True))
    for slot, tables in (("colour", (_COLOUR_SYN, _RARE_COLOUR_SYN)), ("size", (_SIZE_SYN, _RARE_SIZE_SYN)),
                         ("background", (_BACKGROUND_SYN, _RARE_BACKGROUND_SYN)), ("vertical", (_VERTICAL_SYN,))):
        for table in tables:
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
    for w in _SECONDARY_MARKERS:  # reserved: a marker is never an attribute word
        assert tuple(w.split()) not in lex, w
    return lex


_LEXICON = _lexicon()
_MAX_PHRASE = max(len(k) for k in _LEXICON)
_MARKERS = [tuple(m.split()) for m in _SECONDARY_MARKERS]


def _scan(tokens: list[str], text: str) -> dict[str, object]:
    """slot -> value for the lexicon phrases in `tokens`, longest phrase first; a slot named twice with two
    values is a contradiction."""
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
    return found


def parse_caption(text: str) -> dict:
    """The canonical attributes a caption mentions (a subset of ATTRIBUTES + SECONDARY_ATTRIBUTES).

    Reads raw or preprocessed captions. `count` comes from a number word (one, two, pair, trio, ...) or,
    failing that, from a singular shape noun (count 1). `position` is the grid name ("top left", "center",
    ...) built from the vertical/horizontal/centre words. A clause starting with a secondary-object marker
    ("beside", "alongside", "together with", "as well as", "and also") ends the caption and is read apart:
    its shape and colour are `secondary_shape` / `secondary_colour`. Raises ValueError when the caption
    contradicts itself (two colours, two shapes, ...), which a toy caption never does.
    """
    tokens = preprocess_caption(text.replace("-", " "), max_words=0).split()
    cut = next(((i, len(m)) for i in range(len(tokens)) for m in _MARKERS if tuple(tokens[i:i + len(m)]) == m),
               None)
    main, secondary = (tokens, []) if cut is None else (tokens[:cut[0]], tokens[cut[0] + cut[1]:])
    found = _scan(main, text)
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
    if cut is not None:
        other = _scan(secondary, text)
        if "shape" in other:
            out["secondary_shape"] = other["shape"][0]
        if "colour" in other:
            out["secondary_colour"] = other["colour"]
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
# partial, noisy captions (the realistic world); today's captions above are never touched by a knob

OPTIONAL = ("count", "size", "position", "background", "secondary")  # what a partial caption may leave out
# annotator styles and their multipliers of the mention rate (mean 1, so the mean rate is the knob's value
# while m <= 2/3; above, the verbose annotator's rate is capped at 1)
STYLES = {"terse": 0.5, "plain": 1.0, "verbose": 1.5}
# --caption-mention-rate legacy with another caption knob on: today's rates (count is always stated today)
_LEGACY_MENTION = {"count": 1.0, "size": 0.6, "position": 0.75, "background": 0.6, "secondary": 0.5}
_SECONDARY_COLOUR_RATE = 0.75  # a mentioned secondary object is named with its colour this often
_ROW_POSITIONS, _COLUMN_POSITIONS = ["top", "center", "bottom"], ["left", "center", "right"]


class _Words:
    """Word choice for one image's captions: common words from `rng`; with --caption-variation, rare synonyms
    and changed word order from `var_rng`, its own stream, drawn from only when variation > 0."""

    def __init__(self, rng: np.random.Generator, var_rng: np.random.Generator | None, variation: float):
        self.rng, self.var_rng, self.variation = rng, var_rng, variation

    def pick(self, options):
        return _pick(self.rng, options)

    def vary(self) -> bool:
        return self.variation > 0 and bool(self.var_rng.random() < self.variation)

    def shuffle(self, items: list) -> list:
        return [items[int(k)] for k in self.var_rng.permutation(len(items))]

    def _choose(self, common: list, rare: list):
        return _pick(self.var_rng, rare) if rare and self.vary() else self.pick(common)

    def colour(self, c: str) -> str:
        return self._choose(_COLOUR_SYN[c], _RARE_COLOUR_SYN.get(c, []))

    def size(self, s: str) -> str:
        return self._choose(_SIZE_SYN[s], _RARE_SIZE_SYN.get(s, []))

    def background(self, b: str) -> str:
        return self._choose(_BACKGROUND_SYN[b], _RARE_BACKGROUND_SYN.get(b, []))

    def shape(self, shape: str, plural: bool) -> str:
        return self._choose(_SHAPE_SYN[shape], _RARE_SHAPE_SYN.get(shape, []))[int(plural)]


def _misstate(attrs: dict, rng: np.random.Generator, rate: float, shapes: list, colours: list) -> dict:
    """What one annotator believes: `attrs` with each attribute replaced by another of its values with
    probability `rate` (--caption-noise), so every attribute a caption states is wrong at that rate."""
    out = dict(attrs)

    def other(options, value):
        return _pick(rng, [o for o in options if o != value])

    for key, options in (("shape", shapes), ("colour", colours), ("size", SIZES), ("background", BACKGROUNDS)):
        if rng.random() < rate:
            out[key] = other(options, attrs[key])
    if rng.random() < rate:  # one object called two or three; a group of two called three, and back
        out["count"] = other([2, 3], attrs["count"])
    if attrs["arrangement"] != "single" and rng.random() < rate:
        out["arrangement"] = other(["row", "column"], attrs["arrangement"])
    if rng.random() < rate:
        options = {"single": POSITIONS, "row": _ROW_POSITIONS, "column": _COLUMN_POSITIONS}[attrs["arrangement"]]
        out["position"] = other(options, attrs["position"])
    if attrs.get("secondary_shape") is not None:
        if rng.random() < rate:
            out["secondary_shape"] = other(shapes, attrs["secondary_shape"])
        if rng.random() < rate:
            out["secondary_colour"] = other(colours, attrs["secondary_colour"])
    return out


def _main_phrase(W: _Words, said: dict, say: dict, article: bool = True, colour_after: bool = False) -> str:
    """'a small red circle', 'two blue boxes', 'red circles' (a group whose number is not said), 'three
    squares, all of them blue'."""
    count = said["count"]
    colour = W.colour(said["colour"])
    words = " ".join(([W.size(said["size"])] if say["size"] else []) + ([] if colour_after else [colour])
                     + [W.shape(said["shape"], count > 1)])
    if count == 1:
        det = W.pick(["a", "a", "a", "one", "a single", "just one"]) if article else ""
        phrase = _join(_article(words) if det == "a" else det, words)
    elif not say["count"]:
        phrase = _join(W.pick(["", "some"]) if article else "", words)
    else:
        phrase = f"{W.pick({2: ['two', 'two', 'a pair of'], 3: ['three', 'three', 'a trio of', 'a group of three']}[count])} {words}"
    if colour_after:
        tail = [f"all {colour}", f"all of them {colour}", f"each of them {colour}"] if count > 1 else \
            [f"coloured {colour}", f"colored {colour}", f"painted {colour}", f"in {colour}"]
        phrase = f"{phrase}, {W.pick(tail)}"
    return phrase


def _where_phrase(W: _Words, said: dict, terse: bool) -> str:
    """Where the object(s) are, as `said` has it; a group's phrase names its arrangement, its place or both."""
    pos = said["position"]
    words = pos.split()
    v = next((w for w in words if w in _VERTICAL_SYN), None)
    h = next((w for w in words if w in ("left", "right")), None)
    if said["arrangement"] == "single":
        if v and h:
            vw = W.pick(_VERTICAL_SYN[v])
            return W.pick([f"{vw} {h}", f"{vw} {h} corner"]) if terse else \
                W.pick([f"in the {vw} {h} corner", f"at the {vw} {h}", f"near the {vw} {h} corner",
                        f"in the {vw} {h} of the image", f"toward the {vw} {h}"])
        if v:
            part = "upper" if v == "top" else "lower"
            return W.pick([v, f"{v} edge", f"{part} part"]) if terse else \
                W.pick([f"at the {v}", f"near the {v}", f"at the {v} of the image", f"along the {v} edge",
                        f"in the {part} part of the picture"])
        if h:
            return W.pick([h, f"{h} side", f"{h} edge"]) if terse else \
                W.pick([f"on the {h}", f"on the {h} side", f"at the {h} edge", f"to the {h}",
                        f"in the {h} part of the image"])
        return W.pick(["center", "middle", "centre", "centered"]) if terse else \
            W.pick(["in the center", "in the middle", "in the centre", "at the center of the image",
                    "in the middle of the frame", "centered in the frame"])
    row = said["arrangement"] == "row"
    if terse:
        arrange = ["in a row", "side by side", "row"] if row else ["stacked", "in a column", "column"]
        where = {"top": ["top", "at the top"], "bottom": ["bottom", "at the bottom"],
                 "left": ["left", "left side"], "right": ["right", "right side"],
                 "center": ["middle", "center"]}.get(pos)
    else:
        arrange = ["side by side", "in a row", "in a horizontal row", "next to each other", "lined up horizontally",
                   "in a horizontal line"] if row else \
            ["stacked vertically", "in a column", "in a vertical column", "in a vertical line",
             "lined up vertically", "stacked in a column"]
        where = {"top": ["along the top", "across the top", "at the top", "near the top of the image"],
                 "bottom": ["along the bottom", "across the bottom", "at the bottom", "near the bottom of the image"],
                 "left": ["on the left", "along the left side", "at the left", "down the left side"],
                 "right": ["on the right", "along the right side", "at the right", "down the right side"],
                 "center": (["across the middle", "through the center", "in the middle", "across the center"] if row
                            else ["down the middle", "in the center", "down the center", "in the middle"])}.get(pos)
    r = W.rng.random()
    if pos not in (_ROW_POSITIONS if row else _COLUMN_POSITIONS):
        r = 0.7  # a misstated arrangement with a place it cannot have (a column 'at the top'): name only the arrangement
    if r < 0.6:
        return f"{W.pick(arrange)}{', ' if terse else ' '}{W.pick(where)}"
    return W.pick(arrange) if r < 0.85 else W.pick(where)


def _background_words(W: _Words, said: dict, terse: bool) -> str:
    b = W.background(said["background"])
    if terse:
        return W.pick([f"{b} background", f"on {b}", f"{b} backdrop"])
    noun = W.pick(["background", "backdrop"])
    forms = [f"on {_article(b)} {b} {noun}", f"against {_article(b)} {b} {noun}", f"over {_article(b)} {b} {noun}",
             f"with {_article(b)} {b} {noun}"]
    if said["background"] == "striped":
        forms += ["on a background of diagonal stripes", "against diagonal stripes"]
    else:
        forms += [f"on {b}", f"on a plain {b} {noun}"]
    return W.pick(forms)


def _secondary_clause(W: _Words, said: dict, with_colour: bool) -> str:
    """The clause about the secondary object; it always ends the caption, so `parse_caption` can read it apart."""
    words = _join(W.colour(said["secondary_colour"]) if with_colour else "", W.shape(said["secondary_shape"], False))
    marker = W.pick(_SECONDARY_MARKERS)
    tail = W.pick(["", "", "nearby", "close by", "next to it"]) if marker in ("and also", "together with") else ""
    return _join(marker, _article(words), words, tail)


def _partial_caption(W: _Words, style: str, said: dict, say: dict) -> str:
    """One caption in an annotator `style` stating what `say` selects of `said`."""
    terse = style == "terse"
    plural = said["count"] > 1
    colour_after = style == "plain" and W.rng.random() < 0.15
    main = _main_phrase(W, said, say, article=not terse or W.rng.random() < 0.3, colour_after=colour_after)
    pos = _where_phrase(W, said, terse) if say["position"] else ""
    bg = _background_words(W, said, terse) if say["background"] else ""
    if terse:  # a telegraphic list: 'small red circle, upper left, white background'
        parts = [p for p in (main, pos, bg) if p]
        text = ", ".join(W.shuffle(parts) if len(parts) > 1 and W.vary() else parts)
    else:
        if style == "plain":
            form = W.pick(["bare", "bare", "there", "lead", "verb"])
            lead = {"bare": "", "there": "there are" if plural else "there is", "verb": "",
                    "lead": W.pick(["a picture of", "a photo of", "an image of", "a drawing of"])}[form]
            verb = W.pick(["sit", "are placed", "appear"] if plural else ["sits", "is placed", "appears",
                                                                          "can be seen"]) if form == "verb" else ""
        else:  # verbose
            lead = W.pick(["this image shows", "in this picture we can see", "the picture contains",
                           "here we can see", "the image features", "this is a simple drawing of"])
            verb = W.pick(["", "sitting", "placed", "drawn"]) if said["arrangement"] == "single" else ""
        core = _join(lead, main + ("," if colour_after and (pos or bg) else ""))
        if (pos or bg) and W.vary():  # word order: the place or the background first
            pos_first = bool(pos) and (not bg or bool(W.var_rng.random() < 0.5))
            text = _join(f"{pos},", core, bg) if pos_first else _join(f"{bg},", core, _join(verb, pos) if pos else "")
        else:
            text = _join(core, _join(verb, pos) if pos else "", bg)
    if say["secondary"]:
        text += ", " + _secondary_clause(W, said, say["secondary_colour"])
    if style == "verbose" or (style == "plain" and W.rng.random() < 0.5):  # as many real captions are written
        text = text[0].upper() + text[1:] + "."
    return re.sub(r"\s+", " ", text).strip()


def make_partial_captions(attrs: dict, rng: np.random.Generator, n: int = 5, mention_rate: float | None = None,
                          noise: float = 0.0, noise_rng: np.random.Generator | None = None, variation: float = 0.0,
                          variation_rng: np.random.Generator | None = None, shapes=SHAPES, colours=COLOURS) -> list[str]:
    """`n` captions of one image by annotators of random STYLES, each naming the main object (shape, colour)
    and each of OPTIONAL with probability `mention_rate` x its style's multiplier (None: today's rates);
    each stated attribute wrong with probability `noise` (drawn from `noise_rng`, among `shapes` / `colours`
    for shape and colour); rare synonyms and a changed word order at rate `variation` (`variation_rng`).
    `attrs` may carry secondary_shape / secondary_colour (None: no secondary object). Captions may repeat,
    as real ones do: redrawing a repeat would favour the noisy ones."""
    if n < 1:
        raise ValueError(f"n={n} captions requested; use n >= 1.")
    if (noise > 0 and noise_rng is None) or (variation > 0 and variation_rng is None):
        raise ValueError("caption noise and variation need their own generators (noise_rng, variation_rng).")
    rates = _LEGACY_MENTION if mention_rate is None else dict.fromkeys(OPTIONAL, float(mention_rate))
    W = _Words(rng, variation_rng, variation)
    captions = []
    for _ in range(n):
        style = _pick(rng, list(STYLES))
        say = {k: bool(rng.random() < min(1.0, rates[k] * STYLES[style])) for k in OPTIONAL}
        say["count"] |= attrs["count"] == 1  # a singular noun states count 1 whatever the annotator meant
        say["secondary"] &= attrs.get("secondary_shape") is not None
        say["secondary_colour"] = bool(rng.random() < _SECONDARY_COLOUR_RATE)
        said = _misstate(attrs, noise_rng, noise, shapes, colours) if noise > 0 else attrs
        captions.append(_partial_caption(W, style, said, say))
    return captions


# ----------------------------------------------------------------------------------------------------
# the realistic world's knobs, their random streams and its scenes


@dataclass(frozen=True)
class Knobs:
    """The realistic world's knobs (module docstring has what each does); the defaults are today's world."""

    caption_mention_rate: float | None = None  # None: today's captions ("legacy" on the command line)
    caption_noise: float = 0.0
    caption_variation: float = 0.0
    secondary_rate: float = 0.0
    mismatch_rate: float = 0.0
    clutter: float = 0.0
    background_texture: float = 0.0
    zipf_exponent: float = 0.0
    n_shapes: int = len(SHAPES)
    n_colours: int = len(COLOURS)

    def __post_init__(self):
        def number(name, lo, hi, integer=False):
            v = getattr(self, name)
            kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
            if isinstance(v, bool) or not isinstance(v, kinds) or not lo <= v <= hi:
                raise ValueError(f"{name}={v!r} must be {'an integer' if integer else 'a number'} in [{lo}, {hi}].")

        if self.caption_mention_rate is not None:
            number("caption_mention_rate", 0, 1)
        for name in ("caption_noise", "caption_variation", "secondary_rate", "mismatch_rate", "background_texture"):
            number(name, 0, 1)
        number("clutter", 0, MAX_CLUTTER)
        number("zipf_exponent", 0, 4)
        number("n_shapes", 2, len(ALL_SHAPES), integer=True)
        number("n_colours", 2, len(ALL_COLOURS), integer=True)

    def non_default(self) -> dict:
        """The knobs not at their default, as the annotation file records them."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != f.default}

    @property
    def shapes(self) -> list[str]:
        return ALL_SHAPES[:self.n_shapes]

    @property
    def colours(self) -> list[str]:
        return ALL_COLOURS[:self.n_colours]

    def labels(self, values: dict[str, list]) -> dict[str, list]:
        """`values` (attribute -> its label values, in order) with this world's shapes and colours: the classes
        a classifier of its scenes predicts (the student encoders' pretraining, the decoder's judge)."""
        return values | {"shape": self.shapes, "colour": self.colours}

    @property
    def todays_captions(self) -> bool:
        return (self.caption_mention_rate is None and self.caption_noise == 0 and self.caption_variation == 0
                and self.secondary_rate == 0)

    @property
    def todays_concepts(self) -> bool:
        return self.zipf_exponent == 0 and self.n_shapes == len(SHAPES) and self.n_colours == len(COLOURS)


# A knob's stream is a child of the image's SeedSequence([seed, split, index]) with a spawn key of its own, far
# from the keys 0, 1, 2 that `_image_rngs` spawns for today's streams: switching a knob on never shifts
# today's draws, and no two knobs share draws (so e.g. noise 0.1 and noise 0 give the same caption layouts).
_KNOB_STREAMS = {"concept": 1, "secondary": 2, "clutter": 3, "captions": 4, "noise": 5, "variation": 6,
                 "texture": 7}
_WORLD_STREAMS = {"zipf": 1, "mismatch": 2}


def _knob_rng(seed: int, split: str, index: int, stream: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), _SPLIT_CODE[split], int(index)],
                                                        spawn_key=(0x100 + _KNOB_STREAMS[stream],)))


def _world_rng(seed: int, stream: str) -> np.random.Generator:
    # world-wide draws (concept ranks, mismatched pairs); 0x70D is no split code, so no image stream collides
    return np.random.default_rng(np.random.SeedSequence([int(seed), 0x70D], spawn_key=(_WORLD_STREAMS[stream],)))


@functools.lru_cache(maxsize=64)
def concept_distribution(seed: int = 0, n_shapes: int = len(SHAPES), n_colours: int = len(COLOURS),
                         zipf_exponent: float = 0.0) -> tuple[tuple[str, str, float], ...]:
    """(shape, colour, probability) of every concept, by rank: probability proportional to rank^-s.

    The ranks are a seeded permutation of the shapes x colours (a function of the seed only, so every split
    of a world shares them), so the head mixes shapes and colours; s = 0 is uniform, in today's order."""
    concepts = [(s, c) for s in ALL_SHAPES[:n_shapes] for c in ALL_COLOURS[:n_colours]]
    if zipf_exponent > 0:
        concepts = [concepts[int(k)] for k in _world_rng(seed, "zipf").permutation(len(concepts))]
    weights = np.arange(1, len(concepts) + 1, dtype=float) ** -float(zipf_exponent)
    return tuple((s, c, float(p)) for (s, c), p in zip(concepts, weights / weights.sum(), strict=True))


def _draw_concept(rng: np.random.Generator, dist, avoid_colours=()) -> tuple[str, str] | None:
    """A (shape, colour) drawn from `dist`, conditioned on a colour not in `avoid_colours` (None if none is left)."""
    p = np.array([0.0 if c in avoid_colours else p for _, c, p in dist])
    if p.sum() <= 0:
        return None
    s, c, _ = dist[int(rng.choice(len(dist), p=p / p.sum()))]
    return s, c


def _main_boxes(attrs: dict) -> list[tuple[float, float, float]]:
    """(x, y, half side) of a square around each main object, wide enough for its +-5 % size and any jitter."""
    half = _EXTENT[(attrs["count"] > 1, attrs["size"])] * 1.05 / 2 + 0.035
    return [(x, y, half) for x, y in _nominal_centres(attrs)]


def _place(rng: np.random.Generator, boxes: list, extent: float, gap: float = 0.03, tries: int = 100):
    """A centre (x, y) for an object of `extent` whose square keeps `gap` from every box and the image edge
    (a gap of about one pixel at 32 px, so Lanczos ringing never joins two objects); None if none is found."""
    half = extent / 2
    lo = half + 0.02
    for _ in range(tries):
        x, y = (round(float(v), 4) for v in rng.uniform(lo, 1 - lo, size=2))
        if all(abs(x - bx) >= half + bh + gap or abs(y - by) >= half + bh + gap for bx, by, bh in boxes):
            return x, y
    return None


def _extra_object(rng, role: str, concept, xy, extent: float) -> dict:
    rgb = np.clip(np.array(RGB[concept[1]]) + rng.integers(-12, 13, size=3), 0, 255)  # as the main fill's jitter
    return {"role": role, "shape": concept[0], "colour": concept[1], "x": xy[0], "y": xy[1], "extent": extent,
            "rgb": [int(v) for v in rgb]}


def sample_scene(seed: int, split: str, index: int, knobs: Knobs = Knobs()) -> dict:
    """Image (split, index)'s scene: {"attributes": ..., "objects": [secondary and clutter objects]}.

    The attributes are today's (`sample_attributes` on today's stream); the concept knobs redraw only shape
    and colour, from their own stream. The secondary object and the distractors take a concept of another
    colour (so the main object is the one thing of its colour and colour words stay unambiguous) from the
    same distribution, and a place clear of every other object."""
    attrs = sample_attributes(_image_rngs(seed, split, index)[0])
    dist = concept_distribution(int(seed), knobs.n_shapes, knobs.n_colours, float(knobs.zipf_exponent))
    if not knobs.todays_concepts:
        attrs["shape"], attrs["colour"] = _draw_concept(_knob_rng(seed, split, index, "concept"), dist)
    boxes, objects = _main_boxes(attrs), []
    if knobs.secondary_rate > 0:
        rng = _knob_rng(seed, split, index, "secondary")
        secondary = None
        if rng.random() < knobs.secondary_rate:
            concept = _draw_concept(rng, dist, {attrs["colour"]})
            xy = _place(rng, boxes, SECONDARY_EXTENT) if concept else None
            if xy:
                secondary = _extra_object(rng, "secondary", concept, xy, SECONDARY_EXTENT)
                objects.append(secondary)
                boxes.append((xy[0], xy[1], SECONDARY_EXTENT / 2))
        attrs["secondary_shape"] = secondary["shape"] if secondary else None
        attrs["secondary_colour"] = secondary["colour"] if secondary else None
    if knobs.clutter > 0:
        rng = _knob_rng(seed, split, index, "clutter")
        avoid = {attrs["colour"], attrs.get("secondary_colour")}
        for _ in range(min(int(rng.poisson(knobs.clutter)), MAX_CLUTTER)):
            concept = _draw_concept(rng, dist, avoid)
            xy = _place(rng, boxes, CLUTTER_EXTENT) if concept else None
            if xy:  # no room left: fewer distractors, never overlapping ones
                objects.append(_extra_object(rng, "clutter", concept, xy, CLUTTER_EXTENT))
                boxes.append((xy[0], xy[1], CLUTTER_EXTENT / 2))
    return {"attributes": attrs, "objects": objects}


def scene_captions(scene: dict, seed: int, split: str, index: int, knobs: Knobs = Knobs(), n: int = 5) -> list[str]:
    """The captions of image (split, index): today's (`make_captions` on today's stream) unless a caption knob
    is on. They see only the attributes: the clutter is never mentioned."""
    attrs = scene["attributes"]
    if knobs.todays_captions:
        return make_captions(attrs, _image_rngs(seed, split, index)[1], n=n)
    return make_partial_captions(
        attrs, _knob_rng(seed, split, index, "captions"), n, knobs.caption_mention_rate,
        knobs.caption_noise, _knob_rng(seed, split, index, "noise") if knobs.caption_noise > 0 else None,
        knobs.caption_variation, _knob_rng(seed, split, index, "variation") if knobs.caption_variation > 0 else None,
        knobs.shapes, knobs.colours)


def render_scene(scene: dict, seed: int, split: str, index: int, image_size: int = 32,
                 knobs: Knobs = Knobs()) -> Image.Image:
    """The image of image (split, index): today's `draw_image` on today's stream, plus the scene's objects
    and the background texture when those knobs are on."""
    draw_rng = _image_rngs(seed, split, index)[2]
    texture = float(knobs.background_texture)
    texture_rng = _knob_rng(seed, split, index, "texture") if texture > 0 else None
    return draw_scene(scene["attributes"], image_size, draw_rng, objects=scene["objects"], texture=texture,
                      texture_rng=texture_rng)


def mismatch_sources(seed: int, n_train: int, rate: float) -> np.ndarray:
    """(n_train,) the training image whose captions each training image carries: round(rate * n_train) images
    carry another's, in one cycle through them (each carries the next one's, so every caption still appears
    exactly once and no image keeps its own); the others their own."""
    sources = np.arange(n_train)
    k = round(rate * n_train)
    if k == 0 or n_train < 2:
        return sources
    rng = _world_rng(seed, "mismatch")
    chosen = rng.choice(n_train, size=k, replace=False)  # in random order
    if k == 1:  # no cycle of one: it takes a random other image's captions
        other = int(rng.integers(n_train - 1))
        sources[chosen[0]] = other + (other >= chosen[0])
    else:
        sources[chosen] = np.roll(chosen, -1)
    return sources


# ----------------------------------------------------------------------------------------------------
# the dataset


def _image_rngs(seed: int, split: str, index: int) -> list[np.random.Generator]:
    # keyed by (split, index within split): the test set stays the same when n_train changes
    return [np.random.default_rng(s) for s in np.random.SeedSequence([seed, _SPLIT_CODE[split], index]).spawn(3)]


def generate_toyworld(out_dir, n_train: int = 10000, n_val: int = 1000, n_test: int = 1000,
                      image_size: int = 32, seed: int = 0, *, caption_mention_rate: float | str | None = None,
                      caption_noise: float = 0.0, caption_variation: float = 0.0, secondary_rate: float = 0.0,
                      mismatch_rate: float = 0.0, clutter: float = 0.0, background_texture: float = 0.0,
                      zipf_exponent: float = 0.0, n_shapes: int = len(SHAPES), n_colours: int = len(COLOURS)) -> Path:
    """Write the toy world under `out_dir`: `images/{imgid:06d}.png` and `dataset_toyworld.json` (Karpathy
    format, each image entry with its canonical `attributes`). Returns the annotation file's path.

    Same arguments => byte-identical files; the keyword knobs (module docstring) at their defaults give
    today's world byte for byte. Image ids run train, val, test; each image is drawn from its own
    generators keyed by (seed, split, index in split). The annotation file is removed first and written last,
    so an interrupted run never looks complete; stale PNGs from an earlier, larger run are deleted.
    """
    for name, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
            raise ValueError(f"{name}={value!r} must be a positive integer number of images.")
    if not isinstance(image_size, int | np.integer) or image_size < 16:
        raise ValueError(f"image_size={image_size!r} must be an integer >= 16 (shapes are unrecognisable below).")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer.")
    knobs = Knobs(None if caption_mention_rate == "legacy" else caption_mention_rate, caption_noise,
                  caption_variation, secondary_rate, mismatch_rate, clutter, background_texture, zipf_exponent,
                  n_shapes, n_colours)
    seed = int(seed)
    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    ann_file = out_dir / ANN_FILE
    ann_file.unlink(missing_ok=True)
    images_dir.mkdir(parents=True, exist_ok=True)

    plan = [(split, k) for split, n in zip(SPLITS, (n_train, n_val, n_test), strict=True) for k in range(n)]
    # scenes and captions first: a mismatched training image carries captions written for another
    scenes = [sample_scene(seed, split, k, knobs) for split, k in plan]
    captions = [scene_captions(scene, seed, split, k, knobs) for scene, (split, k) in zip(scenes, plan, strict=True)]
    sources = np.arange(len(plan))  # whose captions each image carries; train images come first
    sources[:n_train] = mismatch_sources(seed, int(n_train), float(knobs.mismatch_rate))
    entries, keep = [], set()
    for imgid, (split, k) in enumerate(tqdm(plan, desc="toyworld", unit="img")):
        scene = scenes[imgid]
        filename = f"{imgid:06d}.png"
        save_png(images_dir / filename, render_scene(scene, seed, split, k, int(image_size), knobs))
        keep.add(filename)
        sentids = list(range(5 * imgid, 5 * imgid + 5))
        entry = {
            "imgid": imgid, "filename": filename, "filepath": "images", "split": split, "sentids": sentids,
            "sentences": [{"raw": c, "tokens": preprocess_caption(c, max_words=0).split(), "imgid": imgid,
                           "sentid": s} for c, s in zip(captions[sources[imgid]], sentids, strict=True)],
            "attributes": scene["attributes"],
        }
        if knobs.secondary_rate > 0 or knobs.clutter > 0:  # new keys only when their knob is on
            entry["objects"] = scene["objects"]
        if knobs.mismatch_rate > 0:
            entry["caption_imgid"] = int(sources[imgid])
        entries.append(entry)
    for path in images_dir.iterdir():  # leftovers of an earlier run with more images, or of an interrupted write
        if path.is_file() and path.name not in keep:
            path.unlink()
    ann = {"dataset": "toyworld"}
    if knobs.non_default():  # today's file has neither key
        ann["knobs"] = knobs.non_default()
    if not knobs.todays_concepts:
        ann["concepts"] = [[s, c, round(p, 8)] for s, c, p in
                           concept_distribution(seed, knobs.n_shapes, knobs.n_colours, float(knobs.zipf_exponent))]
    ann["images"] = entries
    save_json(ann_file, ann, indent=None)  # 32 MB indented
    return ann_file


def world_knobs(root) -> Knobs:
    """The knobs a generated world was made with (its annotation file's `knobs`; today's world: the defaults)."""
    from pds.data import load_json

    return Knobs(**load_json(Path(root) / ANN_FILE).get("knobs", {}))


def _mention_rate(text: str):
    return None if text == "legacy" else float(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate the toy world dataset (Karpathy format). The knobs "
                                                 "after --seed make the realistic world; see the module docstring.")
    parser.add_argument("--out", default="data/raw/toyworld", help="output folder (relative to the repo root)")
    parser.add_argument("--n-train", type=int, default=10000)
    parser.add_argument("--n-val", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--caption-mention-rate", type=_mention_rate, default=None,
                        help="'legacy' (default: today's captions) or m in [0, 1]: partial captions by three "
                             "annotator styles, each optional attribute mentioned with probability m x style")
    parser.add_argument("--caption-noise", type=float, default=0.0,
                        help="probability that a stated attribute is worded wrong (default 0)")
    parser.add_argument("--caption-variation", type=float, default=0.0,
                        help="rate of rare synonyms and changed word order (default 0)")
    parser.add_argument("--secondary-rate", type=float, default=0.0,
                        help="probability of a secondary object that captions may mention (default 0)")
    parser.add_argument("--mismatch-rate", type=float, default=0.0,
                        help="fraction of training images carrying another image's captions (default 0)")
    parser.add_argument("--clutter", type=float, default=0.0,
                        help="mean number of unmentioned distractor objects per image, at most 4 (default 0)")
    parser.add_argument("--background-texture", type=float, default=0.0,
                        help="strength 0..1 of a grey background texture (default 0)")
    parser.add_argument("--zipf-exponent", type=float, default=0.0,
                        help="concept frequency ~ rank^-s over shape x colour (default 0: uniform)")
    parser.add_argument("--n-shapes", type=int, default=len(SHAPES), help=f"shapes, up to {len(ALL_SHAPES)} (default 5)")
    parser.add_argument("--n-colours", type=int, default=len(COLOURS),
                        help=f"colours, up to {len(ALL_COLOURS)} (default 6)")
    args = parser.parse_args(argv)
    knobs = {f.name: getattr(args, f.name) for f in fields(Knobs)}
    ann = generate_toyworld(resolve(args.out), args.n_train, args.n_val, args.n_test, args.image_size, args.seed,
                            **knobs)
    print(f"wrote {ann}")


if __name__ == "__main__":
    main()
