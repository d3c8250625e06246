"""studies.dryrun: the real-architecture dry run. Fast tests check its pure parts (the transcribed unCLIP configs and
their conditioning interface, a tiny pipeline built from them, the dataset, the commands taken from dvc.yaml);
the slow test runs the whole dry run (about 10 minutes on 2 cores, peak ~10 GB): `pytest -m slow tests/test_dryrun.py`."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from pds import data, models, synthesize
from pds.paths import ROOT
from studies import dryrun

# narrower and shallower than the checkpoint, with its conditioning interface kept: 768-d image embeddings,
# 1,536-d class projection, 1,024-d cross-attention (= text encoder width), 77 tokens, 8x VAE
TINY = {"unet": {"block_out_channels": [40, 80, 160, 160], "norm_num_groups": 8, "layers_per_block": 1},
        "vae": {"block_out_channels": [32, 32, 32, 32], "layers_per_block": 1},
        "text_encoder": {"num_hidden_layers": 1, "intermediate_size": 64},
        "image_encoder": {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 4}}


def notebook_parameter_names(name: str) -> set[str]:
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    return {m[1] for m in re.finditer(r"^(\w+)\s*:", "".join(cell["source"]), re.M)}


def test_transcribed_configs_have_the_checkpoints_conditioning_interface():
    unet, text, vision = dryrun.UNET_CONFIG, dryrun.TEXT_ENCODER_CONFIG, dryrun.IMAGE_ENCODER_CONFIG
    assert dryrun.IMAGE_NORMALIZER_CONFIG["embedding_dim"] == 768 == vision["projection_dim"]
    assert unet["class_embed_type"] == "projection"
    assert unet["projection_class_embeddings_input_dim"] == 2 * 768  # [noised embedding, noise-level embedding]
    assert unet["cross_attention_dim"] == text["hidden_size"] == 1024
    assert (text["num_hidden_layers"], text["max_position_embeddings"]) == (23, 77)  # OpenCLIP ViT-H text, 77 tokens
    assert unet["block_out_channels"] == [320, 640, 1280, 1280] and unet["attention_head_dim"] == [5, 10, 20, 20]
    assert unet["use_linear_projection"] and unet["sample_size"] == 96
    assert (vision["image_size"], vision["patch_size"]) == (224, 14)
    assert dryrun.SCHEDULER_CONFIG["prediction_type"] == "v_prediction"
    assert dryrun.IMAGE_NOISING_SCHEDULER_CONFIG["beta_schedule"] == "squaredcos_cap_v2"
    assert len(dryrun.VAE_CONFIG["block_out_channels"]) == 4  # 8x downsampling: 96 latents = 768 px


def test_tiny_pipeline_from_the_configs_loads_and_synthesizes_at_224(tmp_path):
    counts = dryrun.save_unclip(tmp_path / "unclip", latent_size=8, overrides=TINY)
    assert set(counts) == {"unet", "vae", "text_encoder", "image_encoder", "image_normalizer"}
    cond = dryrun.conditioning_check(tmp_path / "unclip", 768)
    assert cond == {"image_normalizer": 768, "unet_class_projection": 1536, "unet_cross_attention": 1024,
                    "text_encoder_hidden": 1024, "image_encoder_projection": 768, "unet_sample_size": 8}
    with pytest.raises(ValueError, match="1024-d but the unCLIP decoder is conditioned on 768-d"):
        dryrun.conditioning_check(tmp_path / "unclip", 1024)
    pipe = models.load_unclip(str(tmp_path / "unclip"), device="cpu")  # the real path's loader
    assert type(pipe.scheduler).__name__ == "DDIMScheduler" and pipe.tokenizer.model_max_length == 77
    models.check_unclip_dim(768, pipe)
    protos = np.random.default_rng(0).normal(size=(2, 768)).astype(np.float32)
    settings = synthesize.SynthesisSettings(num_inference_steps=2, guidance_scale=5.0, noise_level=10, eta=0.0,
                                            negative_prompt="text,watermark", image_size=224)
    result = synthesize.synthesize(pipe, protos, ["a red circle", "two blue squares"], tmp_path / "syn", settings,
                                   progress=False)
    assert result.generated == 2
    images = synthesize.load_synthetic(tmp_path / "syn")[1]
    assert [im.size for im in images] == [(224, 224)] * 2  # decoded at 64 px, resized as the real path does


def test_dataset_is_karpathy_flickr30k_shaped_with_the_toy_worlds_first_images(tmp_path):
    from pds.toy import world

    ann = dryrun.write_dataset(tmp_path / "flickr30k")
    entries = json.loads(ann.read_text())["images"]
    assert ann.name == "dataset_flickr30k.json" and all("filepath" not in e for e in entries)
    images, captions = data.load_dataset(tmp_path / "flickr30k", "karpathy", ann.name)
    assert images.groupby("split").size().to_dict() == {"train": 12, "val": 4, "test": 4}
    assert len(captions) == 100
    sizes = {data.load_image(tmp_path / "flickr30k", p).size for p in images.path}
    assert sizes == {(299, 224), (224, 299)}  # 224 px on the short side, landscape and portrait
    world.generate_toyworld(tmp_path / "toy", n_train=12, n_val=4, n_test=4, seed=0)
    _, toy_captions = data.load_dataset(tmp_path / "toy", "karpathy", "dataset_toyworld.json")
    assert toy_captions.caption.tolist() == captions.caption.tolist()  # same images, same captions


def test_commands_are_dvc_yamls_with_the_overrides_and_outputs_under_out(tmp_path):
    params = dryrun.dry_run_params(dryrun.load_params(), tmp_path)
    commands = dryrun.stage_commands(params, tmp_path)
    assert list(commands) == list(dryrun.STAGES)
    notebooks = {"embed": "01_embed", "cluster": "02_cluster", "match": "03_match", "synthesize": "04_synthesize",
                 "evaluate": "05_evaluate"}
    for stage, (_, argv) in commands.items():
        for token in argv[1:]:
            assert not token.startswith(dryrun.OUTPUT_PREFIXES), (stage, token)  # nothing lands in data/ or results/
        if stage in notebooks:
            assert argv[1] == f"notebooks/{notebooks[stage]}.ipynb"
            assert argv[2] == str(tmp_path / "results" / "notebooks" / f"{notebooks[stage]}.ipynb")
            given = dryrun.notebook_parameters(argv)
            assert set(given) <= notebook_parameter_names(notebooks[stage]), stage
    syn = dryrun.notebook_parameters(commands["synthesize"][1])
    assert (syn["clip_model"], syn["clip_pretrained"], syn["unclip"]) == ("ViT-L-14", "none",
                                                                          str(tmp_path / "models" / "unclip"))
    assert (syn["guidance_scale"], syn["noise_level"], syn["eta"]) == ("5.0", "10", "0.0")
    assert (syn["negative_prompt"], syn["image_size"]) == ("text,watermark", "224")
    ev = dryrun.notebook_parameters(commands["evaluate"][1])
    assert (ev["image_encoders"], ev["pretrained"], ev["protocol"]) == (dryrun.IMAGE_ENCODERS, "none", "field,paper")
    assert ev["text_encoder"] == str(tmp_path / "models" / "bert") and ev["n_pairs"] == "4"
    argv = commands["evaluate"][1]  # no tm stages in the dry run: notebook 05 gets no MTT-VL / LoRS inputs
    raw = {argv[i + 1]: argv[i + 2] for i in range(len(argv) - 2) if argv[i] == "-r"}
    assert raw == {"tm_runs": "", "tm_dir": ""} and "tm_runs" not in ev and "tm_dir" not in ev
    argv = commands["text_features"][1]
    assert argv[argv.index("--text-encoder") + 1] == ev["text_encoder"]  # the name the features are checked by
    assert dryrun.notebook_parameters(commands["cluster"][1])["n_clusters"] == "4"


def test_bert_folder_loads_as_a_bert_base_text_encoder(tmp_path):
    n = dryrun.save_bert(tmp_path / "bert")
    assert 105e6 < n < 115e6  # bert-base-uncased: 109.5M
    enc = models.load_text_encoder(str(tmp_path / "bert"), device="cpu")
    assert (enc.dim, enc.pooling, enc.normalize) == (768, "cls", False)
    assert enc.tokenizer("A Red CIRCLE")["input_ids"] == enc.tokenizer("a red circle")["input_ids"]  # uncased


@pytest.mark.parametrize("out", ["data/x", "results", "models/dryrun", "."])
def test_refuses_to_write_over_the_repository(out):
    with pytest.raises(ValueError, match="would write over"):
        dryrun.check_out(ROOT / out)


@pytest.mark.slow
def test_dry_run_end_to_end(tmp_path):
    report = dryrun.run(tmp_path / "dryrun")
    assert report["clip_embeddings"] == {"image": [20, 768], "text": [100, 768]}
    assert report["prototypes"] == [4, 768]
    assert report["unclip_conditioning"]["check_unclip_dim"] == "passed"
    assert report["unclip_conditioning"]["unet_class_projection"] == 1536
    assert report["synthetic_images"] == {"n": 4, "sizes": [[224, 224]], "decoder_output": 128, "resized_to": 224}
    assert report["bert_features"] == {"shape": [100, 768], "pooling": "cls"}
    assert report["student_image_size"] == 224
    assert report["metrics_rows"]["rows_selected_on_val"] == 2 * 3 * 3
    assert report["model_parameters"]["unclip_parameters"]["unet"] > 8e8  # the full-size UNet
    assert not (tmp_path / "dryrun" / "models" / "unclip").exists()  # 6.4 GB, removed afterwards
    assert Path(tmp_path / "dryrun" / "report.json").is_file()
