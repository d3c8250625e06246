"""Stage 04: synthesis from prototypes with a tiny random unCLIP decoder (and the committed toy decoder):
outputs, batch independence, resuming, staleness, clear errors."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from unclip_fakes import tiny_unclip

from pds import artifacts, data, synthesize
from pds.synthesize import SynthesisSettings

D, M = 8, 5
SETTINGS = SynthesisSettings(num_inference_steps=2, guidance_scale=3.0, noise_level=5, negative_prompt="blurry",
                             image_size=16, seed=7)


@pytest.fixture(scope="module")
def pipe():
    return tiny_unclip(embed_dim=D, image_size=16)


@pytest.fixture
def protos():
    rng = np.random.default_rng(0)
    prototypes = rng.normal(size=(M, D)).astype(np.float32)  # (M, d)
    captions = [f"{n} small red circles on a white background" for n in ("one", "two", "three", "four", "five")]
    return prototypes, captions


def folder_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_writes_one_png_per_prototype_and_the_table(pipe, protos, tmp_path):
    prototypes, captions = protos
    res = synthesize.synthesize(pipe, prototypes, captions, tmp_path, SETTINGS, batch_size=2, progress=False)
    assert res.generated == M and res.reused == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [f"{i:04d}.png" for i in range(M)]
    table = data.load_table(tmp_path / "synthetic.parquet")
    pd.testing.assert_frame_equal(table, pd.DataFrame({"file": [f"{i:04d}.png" for i in range(M)],
                                                       "caption": captions, "prototype": np.arange(M)}))
    with Image.open(tmp_path / "0003.png") as im:
        assert im.size == (16, 16) and im.mode == "RGB"


def test_output_is_resized_to_image_size(pipe, protos, tmp_path):
    prototypes, captions = protos
    synthesize.synthesize(pipe, prototypes[:2], captions[:2], tmp_path, replace(SETTINGS, image_size=24),
                          progress=False)
    with Image.open(tmp_path / "0001.png") as im:
        assert im.size == (24, 24)


@pytest.mark.parametrize("eta", [0.0, 1.0])  # eta 1 draws fresh noise at every step, from each image's generator
def test_an_image_does_not_depend_on_its_batch(pipe, protos, tmp_path, eta):
    prototypes, captions = protos
    settings = replace(SETTINGS, eta=eta)
    synthesize.synthesize(pipe, prototypes, captions, tmp_path / "b1", settings, batch_size=1, progress=False)
    synthesize.synthesize(pipe, prototypes, captions, tmp_path / "b3", settings, batch_size=3, progress=False)
    # equal up to float rounding: with several threads the kernels' summation order depends on the batch shape
    for i in range(M):
        a, b = (np.asarray(Image.open(tmp_path / f / f"{i:04d}.png"), dtype=int) for f in ("b1", "b3"))
        assert np.abs(a - b).max() <= 1 and (a != b).mean() < 0.01
    # and the seed matters: different images for different prototypes' seeds
    assert folder_bytes(tmp_path / "b1")["0000.png"] != folder_bytes(tmp_path / "b1")["0001.png"]


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_resumed_run_equals_an_uninterrupted_run(pipe, protos, tmp_path, eta):
    prototypes, captions = protos
    settings = replace(SETTINGS, eta=eta)
    synthesize.synthesize(pipe, prototypes, captions, tmp_path / "full", settings, batch_size=2, progress=False)
    first = synthesize.synthesize(pipe, prototypes, captions, tmp_path / "resumed", settings, batch_size=2,
                                  limit=3, progress=False)
    assert first.generated == 3 and first.table is None
    assert not (tmp_path / "resumed" / "synthetic.parquet").exists()
    with pytest.raises(ValueError, match=r"resumed is incomplete.*rerun the synthesize stage.*resumes"):
        synthesize.load_synthetic(tmp_path / "resumed")  # a stopped run is never read as a finished one
    second = synthesize.synthesize(pipe, prototypes, captions, tmp_path / "resumed", settings, batch_size=2,
                                   progress=False)
    assert second.generated == M - 3 and second.reused == 3
    assert folder_bytes(tmp_path / "resumed") == folder_bytes(tmp_path / "full")  # manifest.json included
    assert len(synthesize.load_synthetic(tmp_path / "resumed")[1]) == M


def test_the_manifest_records_the_prototypes_and_old_manifests_still_resume(pipe, protos, tmp_path):
    prototypes, captions = protos
    data.save_npy(tmp_path / "prototypes" / "image.npy", prototypes)
    made = artifacts.write_manifest(tmp_path / "prototypes", "match", ["image.npy"])
    synthesize.synthesize(pipe, prototypes, captions, tmp_path / "syn", SETTINGS, progress=False, made_from=[made])
    assert synthesize.load_synthetic(tmp_path / "syn", made_from=[made])[0].file.tolist() == [f"{i:04d}.png" for i in range(M)]
    data.save_npy(tmp_path / "prototypes" / "image.npy", prototypes + 1)
    other = artifacts.write_manifest(tmp_path / "prototypes", "match", ["image.npy"])
    with pytest.raises(ValueError, match=rf"syn was made from match run {made.token}, but .*prototypes holds match run "
                                         rf"{other.token}: rerun the synthesize stage"):
        synthesize.load_synthetic(tmp_path / "syn", made_from=[other])
    # a folder written before run tokens ({file: key}) resumes without regenerating its images
    images = data.load_json(tmp_path / "syn" / "manifest.json")["images"]
    data.save_json(tmp_path / "syn" / "manifest.json", images)
    again = synthesize.synthesize(pipe, prototypes, captions, tmp_path / "syn", SETTINGS, progress=False, made_from=[made])
    assert again.generated == 0 and again.reused == M


def test_a_changed_prototype_regenerates_only_its_image(pipe, protos, tmp_path):
    prototypes, captions = protos
    synthesize.synthesize(pipe, prototypes, captions, tmp_path, SETTINGS, progress=False)
    before = folder_bytes(tmp_path)
    changed = prototypes.copy()
    changed[2] += 1.0
    res = synthesize.synthesize(pipe, changed, captions, tmp_path, SETTINGS, progress=False)
    assert res.generated == 1 and res.reused == M - 1
    after = folder_bytes(tmp_path)
    assert [f for f in before if f.endswith(".png") and before[f] != after[f]] == ["0002.png"]
    # a changed caption or setting is stale too
    assert synthesize.synthesize(pipe, changed, captions[:4] + ["a blue cross"], tmp_path, SETTINGS,
                                 progress=False).generated == 1
    assert synthesize.synthesize(pipe, changed, captions[:4] + ["a blue cross"], tmp_path,
                                 replace(SETTINGS, guidance_scale=4.0), progress=False).generated == M


def test_a_decoder_retrained_in_place_regenerates_every_image(protos, tmp_path):
    # the toy decoder is retrained in place (models/toyworld/toy-unclip): the same path must not vouch for old images
    prototypes, captions = protos
    first, second = tiny_unclip(embed_dim=D, image_size=16), tiny_unclip(embed_dim=D, image_size=16)
    assert synthesize.decoder_fingerprint(first) == synthesize.decoder_fingerprint(second)
    synthesize.synthesize(first, prototypes, captions, tmp_path, SETTINGS, progress=False)
    with torch.no_grad():
        next(second.unet.parameters()).add_(0.01)  # "retrained"
    assert synthesize.decoder_fingerprint(first) != synthesize.decoder_fingerprint(second)
    res = synthesize.synthesize(second, prototypes, captions, tmp_path, SETTINGS, progress=False)
    assert res.generated == M and res.reused == 0
    assert synthesize.synthesize(second, prototypes, captions, tmp_path, SETTINGS, progress=False).generated == 0


def test_an_image_without_a_manifest_entry_is_regenerated(pipe, protos, tmp_path):
    prototypes, captions = protos
    synthesize.synthesize(pipe, prototypes, captions, tmp_path, SETTINGS, progress=False)
    good = (tmp_path / "0001.png").read_bytes()
    Image.new("RGB", (16, 16), "white").save(tmp_path / "0001.png")  # e.g. a leftover from another run
    (tmp_path / "manifest.json").unlink()
    assert synthesize.synthesize(pipe, prototypes, captions, tmp_path, SETTINGS, progress=False).generated == M
    assert (tmp_path / "0001.png").read_bytes() == good


def test_fewer_prototypes_delete_the_extra_images(pipe, protos, tmp_path):
    prototypes, captions = protos
    synthesize.synthesize(pipe, prototypes, captions, tmp_path, SETTINGS, progress=False)
    res = synthesize.synthesize(pipe, prototypes[:3], captions[:3], tmp_path, SETTINGS, progress=False)
    assert res.removed == 2 and res.generated == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["0000.png", "0001.png", "0002.png"]
    assert sorted(data.load_json(tmp_path / "manifest.json")["images"]) == ["0000.png", "0001.png", "0002.png"]


@pytest.mark.parametrize("change, message", [
    (lambda p, c: (np.where(np.arange(M)[:, None] == 1, np.nan, p), c), "NaN"),
    (lambda p, c: (p, c[:-1]), "5 prototypes but 4 captions"),
    (lambda p, c: (p, c[:2] + ["  "] + c[3:]), r"prompt captions \[2\] are empty"),
    (lambda p, c: (np.zeros((M, 768), np.float32), c), "768-d but the unCLIP decoder is conditioned on 8-d"),
    (lambda p, c: (p[0], c), r"\(M, d\) array"),
])
def test_bad_inputs_fail_before_any_work(pipe, protos, tmp_path, change, message):
    prototypes, captions = change(*protos)
    with pytest.raises(ValueError, match=message):
        synthesize.synthesize(pipe, prototypes, captions, tmp_path / "out", SETTINGS, progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("settings, message", [
    (replace(SETTINGS, noise_level=1000), "noise_level"),
    (replace(SETTINGS, num_inference_steps=0), "num_inference_steps"),
    (replace(SETTINGS, eta=1.5), "eta"),
])
def test_bad_settings_fail(pipe, protos, tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        synthesize.synthesize(pipe, *protos, tmp_path, settings, progress=False)


def test_toy_decoder_end_to_end(tmp_path):
    from pds.models import load_clip, load_unclip
    from pds.toy.captions import make_captions
    from pds.toy.scene import draw_image, sample_attributes

    model, preprocess, tokenizer = load_clip("local-dir:models/toyworld/toy-clip", device="cpu")
    pipe = load_unclip("models/toyworld/toy-unclip", device="cpu")
    rng = np.random.default_rng(1)
    attrs = [sample_attributes(rng) for _ in range(3)]
    images = [draw_image(a, 32, rng) for a in attrs]
    captions = [make_captions(a, rng, n=1)[0] for a in attrs]
    import torch
    with torch.inference_mode():
        protos = model.encode_image(torch.stack([preprocess(im) for im in images])).numpy()  # (3, 64)
    res = synthesize.synthesize(pipe, protos, captions, tmp_path, replace(SETTINGS, image_size=32),
                                batch_size=2, progress=False)
    assert len(res.table) == 3 and res.images_per_second > 0
    _, out = synthesize.load_synthetic(tmp_path)
    assert [im.size for im in out] == [(32, 32)] * 3


def test_roundtrip_cosine_is_the_row_wise_cosine():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    want = [float(x @ y / np.linalg.norm(x) / np.linalg.norm(y)) for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(synthesize.roundtrip_cosine(a, b), want)
    with pytest.raises(ValueError, match="same shape"):
        synthesize.roundtrip_cosine(a, b[:3])


def test_settings_are_checked_without_a_decoder():
    synthesize.check_settings(SETTINGS)
    with pytest.raises(ValueError, match=r"noise_level=-1 must be in \[0, the decoder's last noise level\]"):
        synthesize.check_settings(replace(SETTINGS, noise_level=-1))
    with pytest.raises(ValueError, match=r"noise_level=1000 must be in \[0, 999\]"):
        synthesize.check_settings(replace(SETTINGS, noise_level=1000), n_levels=1000)
    with pytest.raises(ValueError, match="num_inference_steps=0"):
        synthesize.check_settings(replace(SETTINGS, num_inference_steps=0))
