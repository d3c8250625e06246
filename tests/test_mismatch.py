"""The mismatched-pair sweep (studies.mismatch, `make mismatch`): the world copies differ from their source only in
which captions training images carry; the filter diagnostics count the known mismatched pairs; the report's
tables, gaps and plot; a rate's commands stay in their folder and feed every notebook valid params."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from fakes import metrics_tree

from pds import artifacts, data
from pds.toy import diagnose, world
from studies import mismatch

ROOT = Path(__file__).resolve().parents[1]
TINY = {"n_train": 20, "n_val": 4, "n_test": 4, "image_size": 32, "seed": 3, "caption_mention_rate": 0.5,
        "caption_noise": 0.05, "caption_variation": 0.3, "secondary_rate": 0.3, "mismatch_rate": 0, "clutter": 1.5,
        "background_texture": 0.5, "zipf_exponent": 1.0, "n_shapes": 7, "n_colours": 8}


@pytest.fixture
def params(tmp_path):
    f = tmp_path / "params.yaml"  # the project's parameters with two tiny worlds instead of its own
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["toyworld"] = {"tiny": TINY, "noisy": {**TINY, "mismatch_rate": 0.1}, "toyworld": p["toyworld"]["toyworld"]}
    f.write_text(yaml.safe_dump(p, sort_keys=False))
    return f


def test_a_copy_changes_only_which_captions_training_images_carry(params, tmp_path):
    clean = mismatch.generate(params, "tiny", 0, tmp_path / "p0")
    noisy = mismatch.generate(params, "tiny", 0.25, tmp_path / "p25")
    a, b = data.load_json(clean)["images"], data.load_json(noisy)["images"]
    assert data.load_json(clean).get("knobs", {}).get("mismatch_rate") is None
    assert data.load_json(noisy)["knobs"]["mismatch_rate"] == 0.25
    for x, y in zip(a, b, strict=True):
        assert (tmp_path / "p0/images" / x["filename"]).read_bytes() == (tmp_path / "p25/images" / y["filename"]).read_bytes()
        assert x["attributes"] == y["attributes"]
    bad = diagnose.mismatched_images(tmp_path / "p25")
    assert len(bad) == 5 and all(b[i]["split"] == "train" for i in bad)  # round(0.25 x 20), never val or test
    assert diagnose.mismatched_images(tmp_path / "p0").size == 0
    captions = {i: [s["raw"] for s in im["sentences"]] for i, im in enumerate(a)}
    for im in b:
        carried = [s["raw"] for s in im["sentences"]]
        assert carried == captions[im.get("caption_imgid", im["imgid"])]
        assert (carried != captions[im["imgid"]]) == (im["imgid"] in bad)


def test_world_entry_names_the_missing_world_and_refuses_a_world_already_mismatched(params, tmp_path):
    with pytest.raises(ValueError, match="no toyworld entry 'toyflick'; use one of tiny, noisy, toyworld"):
        mismatch.world_entry(params, "toyflick")
    with pytest.raises(ValueError, match="already has mismatch_rate 0.1"):
        mismatch.generate(params, "noisy", 0.2, tmp_path / "x")


def test_diagnose_counts_the_known_mismatched_pairs(tmp_path):
    root, run = tmp_path / "raw", tmp_path / "run"
    # 4 images, image 1 and 2 carry each other's captions; 2 captions each -> 8 pairs
    images = [{"imgid": i, "split": "train", **({"caption_imgid": 3 - i} if i in (1, 2) else {})} for i in range(4)]
    data.save_json(root / world.ANN_FILE, {"images": images})
    data.save_table(run / "embeddings/captions.parquet",
                    pd.DataFrame({"caption_id": np.arange(8), "image_id": np.repeat(np.arange(4), 2)}))
    data.save_npy(run / "clusters/caption_ids.npy", np.arange(8))
    # the filter drops pairs 2, 3 (image 1, mismatched) and 6 (image 3, true)
    data.save_npy(run / "clusters/keep.npy", np.array([1, 1, 0, 0, 1, 1, 0, 1], bool))
    data.save_table(run / "prototypes/members.parquet",
                    pd.DataFrame({"prototype": [0, 0, 1, 1], "caption_id": [0, 4, 5, 7]}))
    embedded = artifacts.write_manifest(run / "embeddings", "embed", ["captions.parquet"])  # as the stages write them
    clustered = artifacts.write_manifest(run / "clusters", "cluster", ["caption_ids.npy", "keep.npy"], [embedded])
    artifacts.write_manifest(run / "prototypes", "match", ["members.parquet"], [clustered])
    with pytest.raises(ValueError, match="prototypes was made from no embed output"):
        mismatch.diagnose(root, run / "embeddings", run / "clusters", run / "prototypes")
    artifacts.write_manifest(run / "prototypes", "match", ["members.parquet"], [embedded, clustered])
    d = mismatch.diagnose(root, run / "embeddings", run / "clusters", run / "prototypes")
    assert d == {"pairs": 8, "mismatched": 0.5, "dropped": 0.375, "filter_recall": 0.5,
                 "filter_precision": round(2 / 3, 4), "mismatched_kept": 0.4, "mismatched_members": 0.5,
                 "members": 4}


def _metrics(folder, rate, pds, random, filt=None):
    rows = [{"method": m, "image_encoder": "convnet", "protocol": p, "r_mean": r}
            for p in ("field", "paper") for m, r in (("pds", pds), ("random", random), ("kcenter", random - 1))]
    d = folder / f"p{rate}"
    data.save_json(d / "metrics.json", metrics_tree(rows, "w", 100, 3))
    if filt:
        data.save_json(d / "filter.json", filt)


def test_report_collects_rates_in_order_with_gaps_and_filter_rows(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `make mismatch` first"):
        mismatch.collect(tmp_path)
    _metrics(tmp_path, "0.4", 5.0, 4.0, {"mismatched": 0.4, "mismatched_kept": 0.3, "mismatched_members": 0.2})
    _metrics(tmp_path, "0", 7.0, 5.0, {"mismatched": 0.0, "mismatched_kept": 0.0, "mismatched_members": 0.0})
    df, diags = mismatch.collect(tmp_path)
    assert sorted(df.mismatch_rate.unique()) == [0.0, 0.4] and len(df) == 2 * 2 * 3  # val-selected rows only
    assert list(diags.mismatch_rate) == [0.0, 0.4]
    g = mismatch.gaps(df).set_index(["mismatch_rate", "protocol"])
    assert g.loc[(0.0, "field"), "pds - random"] == 2.0 and g.loc[(0.4, "paper"), "pds - kcenter"] == 2.0
    text = mismatch.summary(df, diags, "w")
    assert "7.00 ± 0.50" in text and "pds - random" in text and "mismatched_members" in text


def test_report_plot_is_legible(tmp_path):
    from matplotlib.text import Text

    from pds import plots

    _metrics(tmp_path, "0", 7.0, 5.0, {"mismatched": 0.0, "mismatched_kept": 0.0, "mismatched_members": 0.0})
    _metrics(tmp_path, "0.2", 6.0, 4.0, {"mismatched": 0.2, "mismatched_kept": 0.1, "mismatched_members": 0.1})
    fig = mismatch.plot(*mismatch.collect(tmp_path))
    assert len(fig.axes) == 3  # field, paper, and the filter's panel
    assert fig.get_figwidth() <= plots.MAX_WIDTH_INCHES
    assert all(t.get_fontsize() >= plots.MIN_FONTSIZE for t in fig.findobj(Text) if t.get_text().strip())
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    for ax in fig.axes:
        if (legend := ax.get_legend()) is not None:
            box = legend.get_window_extent(r)
            assert not any(box.overlaps(a.get_window_extent(r)) for a in fig.axes), "legend over data"


def test_a_rate_runs_the_notebooks_in_its_own_folder_with_the_worlds_models_and_valid_params(tmp_path):
    from test_lessons import papermill_call
    from test_pipeline_contract import parameters_cell

    work = tmp_path / "build" / "p0.2"
    commands = mismatch.rate_commands(work, "0.2")
    calls = [papermill_call(w) for w in commands if any(x.endswith("papermill") for x in w)]
    assert len(calls) == 5
    for src, out, params, _ in calls:
        assert out.startswith(f"{work}/notebooks/")
        defaults = parameters_cell(ROOT / src)
        for key, value in params.items():
            assert key in defaults, f"the mismatch sweep passes -p {key}, not a parameter of {src}"
            if key.endswith(("_dir", "_root")) and key != "encoders_dir" and value:  # "": tm_dir left out
                assert value.startswith(str(work)), f"{src}: {key}={value} outside the sweep's folder"
    cluster, evaluate = calls[1][2], calls[4][2]
    assert cluster["n_clusters"] == evaluate["n_pairs"] == "100" and evaluate["dataset"] == "toyflickr_p0.2"
    assert evaluate["encoders_dir"] == "models/toyflickr/toy-encoders"  # the world's own models, trained at p = 0
    assert "full" not in evaluate["methods"].split(",") and "pds" in evaluate["methods"].split(",")
    for words in commands:  # nothing of the pipeline's data/ or results/
        for w in words:
            assert not w.startswith(("data/", "results/")), f"the mismatch sweep touches {w}"
    # the params of the notebooks left at their defaults are params.yaml's (what `dvc repro` would pass)
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert parameters_cell(ROOT / "notebooks/02_cluster.ipynb")["n_init"] == p["cluster"]["n_init"]
    assert parameters_cell(ROOT / "notebooks/04_synthesize.ipynb")["guidance_scale"] == p["synthesize"]["guidance_scale"]
    assert json.dumps(evaluate)  # plain strings
