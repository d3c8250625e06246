"""The toy world: a seeded generator of small images of coloured shapes with five varied, true captions each,
written in the Karpathy format (`dataset_toyworld.json` + `images/`) so `pds.data.load_dataset` reads it.

Serves the `toyworld` DVC stage (`python -m pds.toy.world`). The vocabulary, attribute sampling and drawing
are in `pds.toy.scene`; the captions, and `parse_caption` that maps a caption back to the attributes it
mentions (so tests and analyses can check that text and pixels agree), are in `pds.toy.captions`.

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
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from pds.data import SPLITS, preprocess_caption, save_json, save_png
from pds.paths import resolve
from pds.toy.captions import make_captions, make_partial_captions
from pds.toy.scene import (
    _EXTENT,
    ALL_COLOURS,
    ALL_SHAPES,
    CLUTTER_EXTENT,
    COLOURS,
    RGB,
    SECONDARY_EXTENT,
    SHAPES,
    _nominal_centres,
    draw_scene,
    sample_attributes,
)

_SPLIT_CODE = {s: i for i, s in enumerate(SPLITS)}
MAX_CLUTTER = 4
ANN_FILE = "dataset_toyworld.json"  # every generated world's annotation file, whatever its folder's name

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
