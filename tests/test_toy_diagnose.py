"""pds.toy.diagnose: the caption shape swap, the linear probe and the conditioning comparison's wiring."""

import numpy as np
import pandas as pd
import pytest
import torch
from unclip_fakes import tiny_unclip

from pds import data
from pds.toy import diagnose, world
from pds.toy.captions import parse_caption
from pds.toy.scene import SHAPES


def test_swap_shape_changes_the_shape_and_nothing_else(tmp_path):
    root = tmp_path / "toyworld"
    world.generate_toyworld(root, n_train=60, n_val=1, n_test=1, seed=5)
    _, captions = data.load_dataset(root)
    forms = set()
    for caption in captions.caption:
        before = parse_caption(caption)
        forms.add(diagnose._SHAPE_RE.search(caption).group(1).lower())
        for shape in SHAPES:
            after = parse_caption(diagnose.swap_shape(caption, shape))
            assert after == {**before, "shape": shape}, caption
    assert len(forms) > len(SHAPES)  # synonyms and plurals were exercised, not only canonical names


def test_swap_shape_refuses_what_it_cannot_swap():
    with pytest.raises(ValueError, match="names no shape"):
        diagnose.swap_shape("a red thing on a white background", "circle")
    with pytest.raises(ValueError, match="unknown shape"):
        diagnose.swap_shape("a red circle", "hexagon")


def test_linear_probe_reads_a_separable_label_and_not_a_shuffled_one():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    x = rng.normal(size=(600, 8)) * 0.3
    x[np.arange(600), y] += 2.0  # the label is the strongest axis
    assert diagnose.linear_probe(x[:400], y[:400], x[400:], y[400:]) > 95
    assert diagnose.linear_probe(x[:400], rng.permutation(y[:400]), x[400:], y[400:]) < 60


class _AlwaysCircle:
    """A judge that calls every image a red circle: the figures then depend only on the labels compared."""

    def predict(self, images):
        return pd.DataFrame({"shape": ["circle"] * len(images), "colour": ["red"] * len(images)})


def test_caption_vs_embedding_compares_with_the_right_labels():
    pipe = tiny_unclip(embed_dim=8, image_size=16)
    prompts = ["a red circle", "two red discs in a row", "one big red circle", "three red circles stacked"]
    shapes = ["circle", "circle", "circle", "square"]
    prompts[3] = "three red squares stacked"
    got = diagnose.caption_vs_embedding(pipe, _AlwaysCircle(), torch.randn(4, 8), prompts, shapes,
                                        num_inference_steps=2, batch_size=3, groups={"count": [1, 2, 1, 3]})
    # outputs judged "circle": right for the true circles, wrong for the square and for every swapped caption's
    # shape (never circle where the true shape is; the seeded swap of the square names a triangle, cross or
    # diamond, which would have to be a circle to count)
    assert got == {"true_caption": 75.0, "empty_caption": 75.0, "swapped_caption_follows_embedding": 75.0,
                   "swapped_caption_follows_caption": 0.0, "true_caption_eta_1": 75.0,
                   "true_caption_by_count": {"1": [100.0, 2], "2": [100.0, 1], "3": [0.0, 1]}}
    with pytest.raises(ValueError, match="3 values for 4 images"):
        diagnose.caption_vs_embedding(pipe, _AlwaysCircle(), torch.randn(4, 8), prompts, shapes,
                                      num_inference_steps=2, groups={"size": [1, 2, 3]})


def test_attribute_agreement_counts_majorities_and_compares_with_random_groups():
    attributes = pd.DataFrame({"shape": ["circle", "circle", "square", "cross", "cross", "cross"],
                               "colour": ["red"] * 6}).rename_axis("image_id")
    members = pd.DataFrame({"prototype": [0, 0, 0, 1, 1, 1], "image_id": [0, 1, 2, 3, 4, 5]})
    got = diagnose.attribute_agreement(members, attributes, seed=0)
    assert got["intersections"] == {"shape": round(5 / 6, 3), "colour": 1.0}
    assert got["random_groups"]["colour"] == 1.0 and got["random_groups"]["shape"] <= 5 / 6
    with pytest.raises(ValueError, match="no attributes"):
        diagnose.attribute_agreement(members.assign(image_id=[0, 1, 2, 3, 4, 9]), attributes)


def test_prototype_agreement_reads_the_match_stage_output(tmp_path):
    root = tmp_path / "toyworld"
    world.generate_toyworld(root, n_train=20, n_val=1, n_test=1, seed=3)
    protos = tmp_path / "prototypes"
    protos.mkdir()
    # intersection 0: the five captions of image 0 (one image: every attribute agrees)
    pd.DataFrame({"prototype": [0] * 5 + [1] * 2, "caption_id": [0, 1, 2, 3, 4, 5, 10]}).to_parquet(
        protos / "members.parquet")
    got = diagnose.prototype_agreement(protos, root)
    assert got["n_prototypes"] == 2 and got["n_pairs"] == 7
    truth = data.load_json(root / "dataset_toyworld.json")["images"]
    same_shape = truth[1]["attributes"]["shape"] == truth[2]["attributes"]["shape"]
    assert got["intersections"]["shape"] == round((5 + (2 if same_shape else 1)) / 7, 3)


def test_caption_fidelity_reads_the_worlds_caption_noise_and_skips_mismatched_pairs(tmp_path):
    clean, noisy = tmp_path / "clean", tmp_path / "noisy"
    world.generate_toyworld(clean, n_train=80, n_val=2, n_test=2, seed=1)
    world.generate_toyworld(noisy, n_train=80, n_val=2, n_test=2, seed=1, caption_mention_rate=0.5,
                            caption_noise=0.3, mismatch_rate=0.25)
    c, n = diagnose.caption_fidelity(clean), diagnose.caption_fidelity(noisy)
    assert c["captions"] == 400 and set(c["wrong_when_stated"].values()) == {0.0}  # today's captions are true
    assert c["stated"]["shape"] == c["stated"]["colour"] == 1.0
    assert n["captions"] == 5 * 60  # the 20 images carrying another's captions are left out
    assert 0.15 < n["wrong_when_stated"]["shape"] < 0.45 and 0.15 < n["wrong_when_stated"]["colour"] < 0.45
    assert n["stated"]["position"] < c["stated"]["position"]  # partial captions state less


def test_concept_coverage_counts_concepts_and_test_images_held(tmp_path):
    root = tmp_path / "w"
    world.generate_toyworld(root, n_train=300, n_val=2, n_test=100, seed=2, zipf_exponent=1.5, n_shapes=6,
                            n_colours=7)
    attrs = diagnose.quality.image_attributes(root)
    train = attrs[attrs.split == "train"]
    concept = train["shape"] + " " + train["colour"]
    top = concept.value_counts().index[0]
    # one intersection, all of the most common concept's images: it holds exactly that concept
    members = pd.DataFrame({"prototype": 0, "image_id": concept.index[concept == top]})
    cov = diagnose.concept_coverage(attrs, 5, members)
    assert cov["concepts_in_train"] == concept.nunique() and cov["n_pairs"] == 5
    test = attrs[attrs.split == "test"]
    assert cov["intersections"] == {"concepts": round(1 / concept.nunique(), 3),
                                    "test_images": round(float((test["shape"] + " " + test["colour"] == top).mean()), 3)}
    assert 0 < cov["random"]["concepts"] <= 5 / concept.nunique() + 1e-9
    everything = diagnose.concept_coverage(attrs, 300)
    assert everything["random"]["concepts"] == 1.0 and "intersections" not in everything
