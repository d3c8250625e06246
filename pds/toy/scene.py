"""The toy world's vocabulary and pixels: the attribute values, their colours and extents, a scene's attributes
sampled and drawn. Part of the `toyworld` stage's generator (`pds.toy.world`); the `toymodels` stage's
`pds.toy.encoders` and `pds.toy.quality` draw and label scenes with it too.
"""

import math

import numpy as np
from PIL import Image, ImageDraw

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
# extents of the extra objects: a secondary object smaller than any single main object (0.24), so the main
# object stays the salient one; distractors smaller still (about 4 px at 32 px)
SECONDARY_EXTENT = 0.17
CLUTTER_EXTENT = 0.13

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

