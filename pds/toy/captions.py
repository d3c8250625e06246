"""The toy world's captions: the lexicon, `parse_caption` (a caption back to the attributes it states), today's
template captions (`make_captions`) and the realistic world's partial, noisy ones (`make_partial_captions`).
Part of the `toyworld` stage's generator (`pds.toy.world`); `pds.toy.diagnose` and the tests read captions with it.
"""

import re

import numpy as np

from pds.data import preprocess_caption
from pds.toy.scene import ALL_SHAPES, BACKGROUNDS, COLOURS, POSITIONS, SHAPES, SIZES, _pick

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
