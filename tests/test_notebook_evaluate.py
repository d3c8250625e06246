"""Smoke test: notebook 05_evaluate runs under papermill (the `dvc repro` injection path) with tiny parameters
on fabricated upstream artefacts (the tm / tm_evaluate stages' too), and writes metrics.json in the DESIGN §5
shape, with the MTT-VL / LoRS students joined, runs.csv and the plots."""

import re
import shutil

import numpy as np
import pandas as pd
import papermill
import pytest
from fakes import make_fake_dataset, make_fake_embeddings
from PIL import Image

from pds import artifacts, cluster, contrastive, data, results, text_features
from pds.paths import ROOT

METHODS = ["pds", "random", "herding", "kcenter", "full", "pds_real", "random_kept", "random_avg", "random_nbr"]
TM_METHODS = ["tm", "lors"]


def fake_tm(tmp, captions, rng) -> None:
    """What the tm and tm_evaluate stages write, tiny: tmp/tm/{tm,lors}/ sets of 4 pairs and tmp/tm_runs.csv with
    students of both protocols, 2 seeds, the notebook's epochs (field 2, paper 3)."""
    train = captions[captions.split == "train"].caption_id.to_numpy()
    for m in TM_METHODS:
        folder = tmp / "tm" / m
        for g in range(4):
            data.save_png(folder / f"{g:04d}.png", Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)))
        data.save_table(folder / "synthetic.parquet", pd.DataFrame({
            "file": [f"{g:04d}.png" for g in range(4)], "caption": ["c"] * 4, "caption_id": train[:4],
            "init_caption_id": train[4:8]}))
        data.save_npy(folder / "text.npy", rng.normal(size=(4, 8)).astype(np.float32))
        data.save_npy(folder / "loss.npy", np.linspace(2, 1, 30))
        data.save_json(folder / "meta.json", {"lr_image": 0.1, "lr_text": 0.1, "settings": {"iterations": 30}})
        if m == "lors":
            data.save_npy(folder / "similarity.npy", np.eye(4, dtype=np.float32))
        artifacts.write_manifest(folder, "tm", [p.name for p in folder.iterdir() if p.name != artifacts.MANIFEST])
    rows = []
    for protocol, epochs in (("field", 2), ("paper", 3)):
        for m in TM_METHODS:
            for seed in (0, 1):
                for epoch in range(epochs + 1):
                    for split in ("val", "test"):
                        recalls = dict(zip(contrastive.METRICS, rng.uniform(0, 50, len(contrastive.METRICS)), strict=True))
                        rows.append({"protocol": protocol, "method": m, "image_encoder": "convnet", "seed": seed,
                                     "n_train": 4, "epochs": epochs, "epoch": epoch, "split": split, "loss": 1.0,
                                     **recalls, "seconds": 1.0})
    pd.DataFrame(rows).to_csv(tmp / "tm_runs.csv", index=False)


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nb05")
    mp = pytest.MonkeyPatch()
    mp.setenv("PDS_NUM_THREADS", "1")  # one training process: no worker start-up (test_evaluate covers workers)
    images, captions = make_fake_dataset(tmp / "raw" / "fake", n_images=40, n_groups=4)
    clip_image, _ = make_fake_embeddings(tmp / "embeddings", images, captions, d=16, n_groups=4)
    rng = np.random.default_rng(0)
    group = (captions["image_id"].to_numpy() % 4)
    feats = (rng.normal(size=(4, 8))[group] + 0.1 * rng.normal(size=(len(captions), 8))).astype(np.float32)
    encoder = type("FakeTextEncoder", (), {"name": "fake", "pooling": "mean", "normalize": False})()
    text_features.save_text_features(tmp / "text_features", feats, captions, encoder)
    # a distilled set of 4 pairs: one prototype per colour group, members = that group's train captions
    train = captions[captions.split == "train"]
    members = pd.DataFrame({"prototype": train.image_id.to_numpy() % 4, "caption_id": train.caption_id.to_numpy()})
    prompts = pd.DataFrame({"prototype": np.arange(4), "caption_id": [train.caption_id[train.image_id % 4 == g].iloc[0]
                                                                      for g in range(4)]})
    data.save_table(tmp / "prototypes" / "members.parquet", members.iloc[:-3])
    data.save_table(tmp / "prototypes" / "prompts.parquet", prompts)
    data.save_npy(tmp / "prototypes" / "image.npy", clip_image[:4])  # prototype g = image g's embedding (train)
    clip_text = data.load_npy(tmp / "embeddings" / "text.npy")
    data.save_npy(tmp / "prototypes" / "text.npy", clip_text[prompts.caption_id.to_numpy()] + 0.5)  # (4, d): any CLIP-space rows
    data.save_json(tmp / "prototypes" / "summary.json", {"n_clusters": 4})
    embedded = artifacts.open_artifact(tmp / "embeddings", "embed")  # hand-made folders get a manifest as stages write
    prototyped = artifacts.write_manifest(tmp / "prototypes", "match", [p.name for p in (tmp / "prototypes").iterdir()],
                                          [embedded])
    for g in range(4):
        data.save_png(tmp / "synthetic" / f"{g:03d}.png", Image.open(tmp / "raw" / "fake" / "images" / f"{g:05d}.png"))
    data.save_table(tmp / "synthetic" / "synthetic.parquet",
                    pd.DataFrame({"file": [f"{g:03d}.png" for g in range(4)], "caption": ["c"] * 4, "prototype": range(4)}))
    artifacts.write_manifest(tmp / "synthetic", "synthesize", [p.name for p in (tmp / "synthetic").iterdir()], [prototyped])
    fake_tm(tmp, captions, rng)
    # the noise filter's pool of the controls: every fifth train pair dropped (labels and centroids unused here)
    keep = np.arange(len(train)) % 5 != 4
    n_kept = int(keep.sum())
    cluster.save_clusters(tmp / "clusters", cluster.Clusters(keep, np.zeros(n_kept, np.int64), np.zeros(n_kept, np.int64),
                                                             np.zeros((4, 16), np.float32), np.zeros((4, 16), np.float32),
                                                             0.0, 0.0), train.caption_id.to_numpy(),
                         made_from=[embedded])
    papermill.execute_notebook(
        str(ROOT / "notebooks" / "05_evaluate.ipynb"), str(tmp / "05_evaluate.ipynb"), kernel_name="python3",
        cwd=str(ROOT), progress_bar=False, parameters=_parameters(tmp))
    mp.undo()
    return tmp / "out"


def _parameters(tmp):
    return {"embeddings_dir": str(tmp / "embeddings"), "text_features_dir": str(tmp / "text_features"),
            "clusters_dir": str(tmp / "clusters"), "prototypes_dir": str(tmp / "prototypes"), "synthetic_dir": str(tmp / "synthetic"),
            "dataset_root": str(tmp / "raw" / "fake"), "encoders_dir": str(tmp / "no-encoders"),
            "tm_runs": str(tmp / "tm_runs.csv"), "tm_dir": str(tmp / "tm"), "out_dir": str(tmp / "out"), "dataset": "fake",
            "n_pairs": 4, "methods": ",".join(METHODS), "image_encoders": "convnet", "pretrained": "none",
            "text_encoder": "fake", "epochs": 2, "full_epochs": 1, "full_one_per_image": 1, "lr": 0.05, "lr_image": 0.01,
            "batch_size": 8, "eval_every": 1, "seeds": 2, "seed": 0, "protocol": "field,paper", "paper_lr": 0.2,
            "paper_epochs": 3, "paper_lr_step": 2}


def _fails(tmp, **changed) -> papermill.PapermillExecutionError:
    with pytest.raises(papermill.PapermillExecutionError) as e:
        papermill.execute_notebook(
            str(ROOT / "notebooks" / "05_evaluate.ipynb"), str(tmp / "failed.ipynb"), kernel_name="python3",
            cwd=str(ROOT), progress_bar=False, parameters=_parameters(tmp) | {"out_dir": str(tmp / "failed")} | changed)
    assert not (tmp / "failed").exists()  # stopped before writing anything
    return e.value


def test_every_name_is_checked_before_the_first_student_trains(ran):
    error = _fails(ran.parent, image_encoders="convnet,nosuch")
    assert "check_settings" in error.source and "unknown or no image encoders ['nosuch']" in error.evalue
    error = _fails(ran.parent, methods="pds,randm", image_encoders="convnet")
    assert "check_settings" in error.source and "unknown or no methods ['randm']" in error.evalue
    error = _fails(ran.parent, seeds=0)
    assert "check_settings" in error.source and "seeds=0 (evaluate.seeds) must be a whole number >= 1" in error.evalue


def test_a_synthetic_set_of_other_prototypes_is_refused(ran, tmp_path):
    tmp = ran.parent
    other = tmp_path / "prototypes"  # another match run: same files but one prototype moved
    shutil.copytree(tmp / "prototypes", other)
    data.save_npy(other / "image.npy", data.load_npy(other / "image.npy") + 1)
    embedded = artifacts.open_artifact(tmp / "embeddings", "embed")
    run = artifacts.write_manifest(other, "match", data.load_json(other / "manifest.json")["files"], [embedded])
    made = data.load_json(tmp / "synthetic" / "manifest.json")["inputs"]["match"]
    error = _fails(tmp, prototypes_dir=str(other))
    assert re.search(rf"synthetic was made from match run {made}, but .*prototypes holds match run {run.token}: "
                     r"rerun the synthesize stage \(notebook 04", error.evalue)


def test_metrics_json_has_one_entry_per_method_encoder_and_rule(ran):
    metrics = data.load_json(ran / "metrics.json")
    assert (metrics["dataset"], metrics["n_pairs"], metrics["seeds"]) == ("fake", 4, 2)
    table = results.rows(metrics, "val")
    got = list(table[["protocol", "method", "image_encoder"]].itertuples(index=False, name=None))
    # the tm_evaluate stage's students join the table after the notebook's own methods
    assert got == [(p, m, "convnet") for p in ("field", "paper") for m in METHODS + TM_METHODS]
    assert len(results.rows(metrics, "test")) == len(table)
    for r in table.to_dict("records"):
        assert 0 <= r["r_mean"] <= 100 and r["sd"] >= 0
        want = {"field": 1 if r["method"] == "full" else 2, "paper": 3}[r["protocol"]]
        assert r["epochs"] == want


def test_runs_csv_holds_every_evaluation(ran):
    runs = pd.read_csv(ran / "runs.csv")
    # field: 9 methods x 2 seeds; epochs 0..2 (0..1 for full), val and test each; paper: epochs 0, 1, 2, 3;
    # then the 2 x 2 MTT-VL / LoRS students of each protocol
    assert len(runs) == (8 * 2 * 3 + 2 * 2) * 2 + 9 * 2 * 4 * 2 + 2 * 2 * (3 + 4) * 2
    runs = runs[runs.protocol == "field"]
    assert set(runs.columns) >= {"method", "image_encoder", "seed", "epoch", "split", *contrastive.METRICS}
    assert runs.loc[runs.method == "full", "n_train"].iloc[0] == 24  # one caption per train image each epoch
    assert (runs.loc[runs.method != "full", "n_train"] == 4).all()


def test_the_controls_report_their_pool_and_neighbourhood(ran):
    import nbformat

    text = "".join(o.get("text", "") for c in nbformat.read(ran.parent / "05_evaluate.ipynb", 4).cells
                   if c.cell_type == "code" for o in c.outputs)
    # 24 train images x 5 captions, every fifth dropped; members: 120 train captions by group, the last 3 cut
    assert "controls draw from the 96 of 120 training pairs the noise filter keeps" in text
    assert "random_nbr averages the captions of the 30 nearest kept pairs" in text


def test_plots_are_written(ran):
    for name in ("r_mean.png", "retrieval_examples.png"):
        assert (ran / name).stat().st_size > 1000
