"""Where the toy decoder loses shape: how much shape the toy-CLIP embedding carries, and how much the
decoder takes from the caption versus the embedding. Measured on the validation split (the test split is for
the model card's figures), outside the toymodels stage: it reads the committed models, trains nothing but the
judge and a linear probe. With --prototypes it also measures how pure the match stage's intersections are in
each toy attribute (README, "Results").

    python -m pds.toy.diagnose --world data/raw/toyworld --models models/toyworld --n 200 --prototypes data/prototypes

writes `models/toyworld/diagnostics.json` (quoted in models/README.md, "Limitations", and the README).
"""

import argparse
import re

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression

from pds import data
from pds.paths import resolve
from pds.toy import quality, world
from pds.toy.captions import _SHAPE_SYN, parse_caption
from pds.toy.scene import ATTRIBUTES, SHAPES

# every written form of every shape -> 1 if plural; the pattern tries the longest first ("plus signs")
_FORM = {form: plural for forms in _SHAPE_SYN.values() for pair in forms for plural, form in enumerate(pair)}
_SHAPE_RE = re.compile(r"\b(" + "|".join(map(re.escape, sorted(_FORM, key=len, reverse=True))) + r")\b",
                       re.IGNORECASE)


def swap_shape(caption: str, shape: str) -> str:
    """The caption with its shape noun replaced by `shape` (same number); everything else unchanged."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; use one of {SHAPES}.")
    new = _SHAPE_RE.sub(lambda m: _SHAPE_SYN[shape][0][_FORM[m.group(1).lower()]], caption)
    if new == caption and parse_caption(caption).get("shape") != shape:
        raise ValueError(f"caption {caption!r} names no shape to swap.")
    return new


def linear_probe(train_x: np.ndarray, train_y, test_x: np.ndarray, test_y, seed: int = 0) -> float:
    """Test accuracy (percent) of a logistic regression on L2-normalised embeddings."""
    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    clf = LogisticRegression(C=10.0, max_iter=3000, random_state=seed).fit(unit(train_x), train_y)
    return round(100 * float(clf.score(unit(test_x), test_y)), 2)


def _shape_hits(pred: pd.DataFrame, shapes) -> float:
    """Percent of judged images (pred: the judge's DataFrame) whose shape is `shapes`."""
    return round(100 * float(np.mean(pred["shape"].to_numpy() == np.asarray(shapes))), 2)


def caption_vs_embedding(pipe, judge, cond: torch.Tensor, prompts: list[str], shapes: list[str],
                         num_inference_steps: int = 25, guidance_scale: float = 3.0, seed: int = 0,
                         batch_size: int = 50, groups: dict[str, list] | None = None) -> dict:
    """Judge the shape of decoded images (percent) under four conditionings of the same embeddings `cond`:
    the true caption, an empty caption, a caption naming another shape (does the output follow the
    embedding or the caption?), and the true caption with stochastic sampling (DDIM eta 1).

    `groups` ({name: one value per image}, e.g. the images' sizes) splits the true-caption figure by value
    (`true_caption_by_<name>`: {value: [percent, number of images]}), to see which images lose their shape."""
    rng = np.random.default_rng(seed)
    others = [[s for s in SHAPES if s != t][int(rng.integers(len(SHAPES) - 1))] for t in shapes]
    swapped = [swap_shape(p, o) for p, o in zip(prompts, others, strict=True)]

    def decode(prompts_, eta=0.0):
        out = quality.decode(pipe, cond, prompts_, num_inference_steps, guidance_scale, eta=eta, seed=seed,
                             batch_size=batch_size)
        return judge.predict(quality._as_uint8(out))

    swap_pred, true_pred = decode(swapped), decode(prompts)
    by = {}
    for name, values in (groups or {}).items():
        if len(values) != len(shapes):
            raise ValueError(f"groups[{name!r}] has {len(values)} values for {len(shapes)} images.")
        values = np.asarray([str(v) for v in values])
        rows = {v: np.flatnonzero(values == v) for v in sorted(set(values.tolist()))}
        by[f"true_caption_by_{name}"] = {
            v: [_shape_hits(true_pred.iloc[idx], [shapes[i] for i in idx]), len(idx)]
            for v, idx in rows.items()}
    return {
        "true_caption": _shape_hits(true_pred, shapes),
        "empty_caption": _shape_hits(decode([""] * len(prompts)), shapes),
        "swapped_caption_follows_embedding": _shape_hits(swap_pred, shapes),
        "swapped_caption_follows_caption": _shape_hits(swap_pred, others),
        "true_caption_eta_1": _shape_hits(decode(prompts, eta=1.0), shapes),
        **by,
    }


def attribute_agreement(members: pd.DataFrame, attributes: pd.DataFrame, seed: int = 0) -> dict:
    """How alike the pairs of each matched intersection are: per attribute, the fraction of member pairs whose
    image has its intersection's most common value (averaged over pairs, so large intersections weigh more),
    and the same for a seeded shuffle of the members over intersections of the same sizes (the agreement of
    groups drawn at random). members: columns prototype, image_id; attributes: one row per image_id."""
    if not {"prototype", "image_id"} <= set(members.columns):
        raise ValueError(f"members needs columns prototype and image_id, got {list(members.columns)}.")
    missing = set(members.image_id) - set(attributes.index)
    if missing:
        raise ValueError(f"{len(missing)} member images have no attributes (e.g. {sorted(missing)[:3]}); the "
                         "prototypes must come from the same toy world.")
    shuffled = np.random.default_rng(seed).permutation(members.prototype.to_numpy())
    values = {name: attributes.loc[members.image_id, name].astype(str).to_numpy()
              for name in ATTRIBUTES if name in attributes.columns}  # (n_members,) per attribute

    def agreement(groups: np.ndarray) -> dict:
        out = {}
        for name, v in values.items():
            counts = pd.crosstab(groups, v)
            out[name] = round(float(counts.max(axis=1).sum() / len(v)), 3)
        return out

    return {"intersections": agreement(members.prototype.to_numpy()), "random_groups": agreement(shuffled)}


def member_images(prototypes_dir, world_root) -> pd.DataFrame:
    """The match stage's members.parquet with each pair's image_id (prototype, caption_id, image_id)."""
    members = pd.read_parquet(resolve(prototypes_dir) / "members.parquet")
    _, captions = data.load_dataset(resolve(world_root), ann_file=world.ANN_FILE, preprocess=False)  # only its ids
    return members.merge(captions[["caption_id", "image_id"]], on="caption_id", how="left", validate="m:1")


def prototype_agreement(prototypes_dir, world_root, seed: int = 0, members: pd.DataFrame | None = None,
                        attributes: pd.DataFrame | None = None) -> dict:
    """attribute_agreement of the match stage's output in `prototypes_dir` on the toy world at `world_root`
    (`members` / `attributes`: already read by the caller)."""
    members = member_images(prototypes_dir, world_root) if members is None else members
    attributes = quality.image_attributes(world_root) if attributes is None else attributes
    return {"n_prototypes": int(members.prototype.nunique()), "n_pairs": len(members),
            **attribute_agreement(members, attributes, seed)}


def _carries_other_captions(entry: dict) -> bool:
    """A world's annotation entry whose captions were written for another image (--mismatch-rate)."""
    return entry.get("caption_imgid", entry["imgid"]) != entry["imgid"]


def mismatched_images(world_root) -> np.ndarray:
    """Image ids (train split) whose captions were written for another image: the annotation's
    `caption_imgid` (absent when the world has no mismatched pairs)."""
    ann = data.load_json(resolve(world_root) / world.ANN_FILE)
    return np.array([im["imgid"] for im in ann["images"] if _carries_other_captions(im)], dtype=np.int64)


def caption_fidelity(world_root) -> dict:
    """The training captions against their own image (pairs whose image carries another's captions left out):
    per attribute, the share of captions that state it and, of those, the share that state it wrongly (the
    world's caption noise as `parse_caption` reads it)."""
    ann = data.load_json(resolve(world_root) / world.ANN_FILE)
    stated, wrong, n = dict.fromkeys(ATTRIBUTES, 0), dict.fromkeys(ATTRIBUTES, 0), 0
    for im in ann["images"]:
        if im["split"] != "train" or _carries_other_captions(im):
            continue
        for sentence in im["sentences"]:
            said, n = parse_caption(sentence["raw"]), n + 1
            for name in ATTRIBUTES:
                if name in said:
                    stated[name] += 1
                    wrong[name] += str(said[name]) != str(im["attributes"][name])
    return {"captions": n, "stated": {a: round(stated[a] / max(n, 1), 3) for a in ATTRIBUTES},
            "wrong_when_stated": {a: round(wrong[a] / stated[a], 3) if stated[a] else None for a in ATTRIBUTES}}


def concept_coverage(attrs: pd.DataFrame, n_pairs: int, members: pd.DataFrame | None = None,
                     seeds=(0, 1, 2)) -> dict:
    """How much of the world M pairs can show: the main object's (shape, colour) concepts in the training split,
    and, for M random training images (mean over `seeds`) and for the matched intersections (each
    prototype's most common member concept; `members` with columns prototype, image_id), the share of those
    concepts they hold and the share of test images whose concept they hold. `attrs`: the world's
    `quality.image_attributes`."""
    concept = attrs["shape"].astype(str) + " " + attrs["colour"].astype(str)
    train, test = concept[attrs.split == "train"], concept[attrs.split == "test"]
    world_concepts = set(train)

    def covered(held: set) -> dict:
        return {"concepts": round(len(held & world_concepts) / len(world_concepts), 3),
                "test_images": round(float(test.isin(held).mean()), 3)}

    runs = [covered(set(train.sample(n_pairs, random_state=s))) for s in seeds]
    out = {"concepts_in_train": len(world_concepts), "n_pairs": n_pairs,
           "random": {k: round(float(np.mean([r[k] for r in runs])), 3) for k in runs[0]}}
    if members is not None:
        majority = members.assign(c=concept.loc[members.image_id].to_numpy()).groupby("prototype").c.agg(
            lambda c: c.value_counts().index[0])
        out["intersections"] = covered(set(majority))
    return out


def world_evidence(world_root, prototypes_dir, seed: int = 0) -> dict:
    """Why a world is easy or hard for single pairs and what the matched intersections average (README, "Two
    worlds"): caption fidelity, concept coverage of M random pairs vs the intersections, and the
    intersections' attribute agreement."""
    members, attrs = member_images(prototypes_dir, world_root), quality.image_attributes(world_root)
    n_pairs = len(data.load_npy(resolve(prototypes_dir) / "image.npy"))  # the budget M, empty intersections too
    return {"captions": caption_fidelity(world_root), "coverage": concept_coverage(attrs, n_pairs, members),
            "prototype_attribute_agreement": prototype_agreement(prototypes_dir, world_root, seed, members, attrs)}


def main(argv: list[str] | None = None) -> None:
    from pds.models import load_clip, load_unclip

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", default="data/raw/toyworld")
    p.add_argument("--models", default="models/toyworld", help="folder holding toy-clip/ and toy-unclip/")
    p.add_argument("--n", type=int, default=200, help="validation images decoded per conditioning")
    p.add_argument("--num-inference-steps", type=int, default=25)
    p.add_argument("--guidance-scale", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--prototypes", default=None, help="match-stage folder (data/prototypes) to measure too")
    p.add_argument("--out", default=None, help="json file (default: <models>/diagnostics.json)")
    p.add_argument("--evidence-only", action="store_true",
                   help="only the world's evidence (captions, coverage, intersections; needs --prototypes and --out): "
                        "no CLIP probe, no decoding")
    args = p.parse_args(argv)
    if args.evidence_only:
        if not (args.prototypes and args.out):
            p.error("--evidence-only needs --prototypes (the match stage's folder) and --out (a json file).")
        report = world_evidence(args.world, args.prototypes, args.seed)
        data.save_json(resolve(args.out), report)
        print(report)
        return
    torch.set_num_threads(args.threads)
    world, models = resolve(args.world), resolve(args.models)
    model, preprocess, _ = load_clip(f"local-dir:{models / 'toy-clip'}", device="cpu")
    train_pil, train_images, _, train_labels = quality.split_arrays(world, "train")
    val_pil, _, val_prompts, val_labels = quality.split_arrays(world, "val")
    train_emb = quality.embed_pil(model, preprocess, train_pil)
    val_emb = quality.embed_pil(model, preprocess, val_pil)
    report = {"split": "val", "shape_chance": round(100 / len(SHAPES), 2),
              "clip_linear_probe": {
                  name: linear_probe(train_emb.numpy(), train_labels[name].tolist(), val_emb.numpy(),
                                     val_labels[name].tolist(), seed=args.seed) for name in ("shape", "colour")}}
    print("toy-CLIP linear probe (val accuracy, %):", report["clip_linear_probe"])
    pipe = load_unclip(str(models / "toy-unclip"), device="cpu")
    judge = quality.train_judge(train_images, train_labels, seed=args.seed)
    n = min(args.n, len(val_pil))
    val_labels = val_labels.iloc[:n]
    shape_hits = caption_vs_embedding(pipe, judge, val_emb[:n], val_prompts[:n], val_labels["shape"].tolist(),
                                      num_inference_steps=args.num_inference_steps,
                                      guidance_scale=args.guidance_scale, seed=args.seed,
                                      groups={a: val_labels[a].tolist() for a in ("size", "count")})
    report["decoder_shape"] = {"n": n, "num_inference_steps": args.num_inference_steps,
                               "guidance_scale": args.guidance_scale, **shape_hits}
    print("decoder shape correct (judge, %):", report["decoder_shape"])
    if args.prototypes:
        report["prototype_attribute_agreement"] = prototype_agreement(args.prototypes, world, args.seed)
        print("intersection attribute agreement:", report["prototype_attribute_agreement"])
    data.save_json(resolve(args.out) if args.out else models / "diagnostics.json", report)


if __name__ == "__main__":
    main()
