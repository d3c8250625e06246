"""Real-architecture dry run: stages 01-05 end to end with the real path's parameters and architectures, at
random weights, on ~20 toy images upscaled to Flickr-like sizes, on a CPU, without any download.

    python -m studies.dryrun --out build/dryrun-real      (make dryrun-real)

What it builds and runs (no weights exist here, so every model is randomly initialised):

- CLIP: open_clip `ViT-L-14` with no pretrained tag (`clip_pretrained=none`), created by `pds.models.load_clip`
  inside notebooks 01 and 04 (each kernel initialises its own random copy);
- decoder: a `StableUnCLIPImg2ImgPipeline` with the architecture of `stabilityai/stable-diffusion-2-1-unclip-small`
  (configs transcribed below), saved with `save_pretrained` and passed as `synthesize.unclip`; only the UNet's
  `sample_size` is reduced (16 latents -> 128-px images instead of 96 -> 768 px), because `pds.synthesize`
  calls the pipeline without height/width, so the output size is the UNet config's `sample_size` x 8;
- students: timm `nfnet_l0`, `nf_resnet50`, `vit_tiny_patch16_224` (`pretrained=none`), and a BERT-base-shaped
  text encoder (`BertModel(BertConfig())`, random) saved with the MiniLM package's uncased WordPiece tokenizer
  (the bert-base-uncased vocabulary) and passed as `text_encoder`;
- the stages embed ... evaluate as dvc.yaml writes their commands (papermill with `-p` parameters for notebooks
  01-05, `python -m pds.text_features`), run from the repository root with params.yaml's values overridden
  as `dvc exp run -S` would (`OVERRIDES`: the real path's values, and the dry run's cuts) and every
  repository output (data/, results/, models/) moved under --out; dvc itself is not run.

It checks and prints: 768-d CLIP embeddings, the decoder's conditioning (768-d image normaliser, 1,536-d class
projection, 1,024-d cross-attention = text encoder width), 224x224 synthetic images resized from the decoder's
output, 768-d BERT features, 224-px students, and metrics.json rows for every protocol x encoder x method.
Numbers (recalls, round-trip cosines) are meaningless at random weights; only the wiring is tested.
"""

import argparse
import gc
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from pds import config, data, paths, results

# ----------------------------------------------------------------------------------------------------
# stabilityai/stable-diffusion-2-1-unclip-small, transcribed from its component configs (model_index.json,
# unet/, vae/, text_encoder/, image_encoder/, feature_extractor/, image_normalizer/, scheduler/,
# image_noising_scheduler/) as we know them; no file of the checkpoint is read here (none can be downloaded).
# Values we are not sure of are marked "unsure"; none of them changes a tensor shape the pipeline passes on.

CLIP_EMBED_DIM = 768  # ViT-L/14's joint embedding; the decoder's image normaliser must match it
TEXT_HIDDEN = 1024  # OpenCLIP ViT-H/14 text width = the UNet's cross_attention_dim
CHECKPOINT_LATENT = 96  # the checkpoint's UNet sample_size: 96 latents x 8 = 768-px images

# unet/config.json: the SD 2.1 (768-v) UNet plus a class projection of [noised image embedding (768),
# sinusoidal noise-level embedding (768)] = 1,536
UNET_CONFIG = {
    "sample_size": CHECKPOINT_LATENT, "in_channels": 4, "out_channels": 4, "center_input_sample": False,
    "flip_sin_to_cos": True, "freq_shift": 0,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "downsample_padding": 1,
    "mid_block_scale_factor": 1, "act_fn": "silu", "norm_num_groups": 32, "norm_eps": 1e-5,
    "cross_attention_dim": TEXT_HIDDEN, "attention_head_dim": [5, 10, 20, 20],  # diffusers' name for the head count
    "use_linear_projection": True, "upcast_attention": True, "dual_cross_attention": False,
    "only_cross_attention": False, "resnet_time_scale_shift": "default",
    "class_embed_type": "projection", "projection_class_embeddings_input_dim": 2 * CLIP_EMBED_DIM,
    "num_class_embeds": None,
}
# vae/config.json: the Stable Diffusion 2 AutoencoderKL (8x downsampling, 4 latent channels)
VAE_CONFIG = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4, "act_fn": "silu", "norm_num_groups": 32, "sample_size": 768,
    "scaling_factor": 0.18215,
}
# text_encoder/config.json: OpenCLIP ViT-H/14's text tower as SD 2.x ships it (23 of its 24 layers, 77 tokens).
# unsure: the special-token ids (the checkpoint may carry transformers' old defaults 0/2/1) and projection_dim
# (512?); the pipeline uses only the last hidden state, whose width (1024) is what matters.
TEXT_ENCODER_CONFIG = {
    "vocab_size": 49408, "hidden_size": TEXT_HIDDEN, "intermediate_size": 4096, "num_hidden_layers": 23,
    "num_attention_heads": 16, "max_position_embeddings": 77, "hidden_act": "gelu", "layer_norm_eps": 1e-5,
    "projection_dim": 512, "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407,
}
# image_encoder/config.json: OpenAI CLIP ViT-L/14's vision tower with its 768-d projection (used by the pipeline
# only when it is called with `image=`; PDS passes `image_embeds=`, but the pipeline loads it)
IMAGE_ENCODER_CONFIG = {
    "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
    "image_size": 224, "patch_size": 14, "projection_dim": CLIP_EMBED_DIM, "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}
# feature_extractor/preprocessor_config.json: CLIP's 224-px preprocessing
FEATURE_EXTRACTOR_CONFIG = {
    "size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224}, "do_resize": True,
    "do_center_crop": True, "do_normalize": True, "resample": 3,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
}
# image_normalizer/config.json
IMAGE_NORMALIZER_CONFIG = {"embedding_dim": CLIP_EMBED_DIM}
# scheduler/scheduler_config.json: SD 2.1's v-prediction schedule. unsure: whether the checkpoint names
# DDIMScheduler or DDPMScheduler here (the betas and prediction type agree either way); DDIM, as SD 2.1.
SCHEDULER_CONFIG = {
    "_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "prediction_type": "v_prediction", "clip_sample": False,
    "set_alpha_to_one": False, "steps_offset": 1, "timestep_spacing": "leading",
}
# image_noising_scheduler/scheduler_config.json: noises the image embedding (noise_level) on a cosine schedule.
# unsure: clip_sample / variance_type (not used by add_noise, the only call the pipeline makes)
IMAGE_NOISING_SCHEDULER_CONFIG = {
    "_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2",
    "beta_start": 0.0001, "beta_end": 0.02, "prediction_type": "epsilon", "clip_sample": True,
    "variance_type": "fixed_small",
}
TOKENIZER_MAX_LENGTH = 77  # unsure: SD 2.x's tokenizer pads with "!"; pds.toy.unclip.build_tokenizer pads with EOS

# ----------------------------------------------------------------------------------------------------
# parameters: params.yaml, then the real path's values (README "Running on real data"), then the dry run's cuts

IMAGE_ENCODERS = "nfnet_l0,nf_resnet50,vit_tiny_patch16_224"  # the real list less nf_regnet_b1 (time)
METHODS = "pds,random,full"
PARAMS_YAML = None  # use params.yaml's value
# (param, dry-run value, the real path's value); "<out>" is the --out folder. Applied on top of params.yaml as
# `dvc exp run -S param=value` would; every other param keeps params.yaml's value.
OVERRIDES = [
    ("base.dataset", "dryrun-real", "flickr30k"),
    ("base.n_pairs", 4, 100),
    ("embed.ann_format", "karpathy", "karpathy"),
    ("embed.ann_file", "dataset_flickr30k.json", "dataset_flickr30k.json"),
    ("embed.clip_model", "ViT-L-14", "ViT-L-14"),
    ("embed.clip_pretrained", "none", "openai"),
    ("synthesize.unclip", "<out>/models/unclip", "stabilityai/stable-diffusion-2-1-unclip-small"),
    ("synthesize.num_inference_steps", 2, 100),
    ("synthesize.guidance_scale", 5.0, 5.0),
    ("synthesize.noise_level", 10, 10),
    ("synthesize.eta", 0.0, 0.0),
    ("synthesize.negative_prompt", "text,watermark", "text,watermark"),
    ("synthesize.image_size", 224, 224),
    ("evaluate.protocol", "field,paper", "field,paper"),
    ("evaluate.text_encoder", "<out>/models/bert", "bert-base-uncased"),
    ("evaluate.image_encoders", IMAGE_ENCODERS, "nfnet_l0,nf_resnet50,nf_regnet_b1,vit_tiny_patch16_224"),
    ("evaluate.pretrained", "none", "imagenet"),
    ("evaluate.methods", METHODS, PARAMS_YAML),
    ("evaluate.epochs", 1, PARAMS_YAML),
    ("evaluate.full_epochs", 1, PARAMS_YAML),
    ("evaluate.paper_epochs", 1, PARAMS_YAML),
    ("evaluate.eval_every", 1, PARAMS_YAML),
    ("evaluate.seeds", 1, PARAMS_YAML),
]
STAGES = ("embed", "cluster", "match", "synthesize", "text_features", "evaluate")  # dvc.yaml's, toy ones aside
OUTPUT_PREFIXES = ("data/", "results/", "models/")  # repository paths in dvc.yaml's commands, moved under --out
SPLIT_SIZES = {"train": 12, "val": 4, "test": 4}


def step(n: int, total: int, name: str, t0: float, detail: str) -> None:
    print(f"[dryrun {n}/{total}] {name}: {detail} ({time.perf_counter() - t0:.1f} s)", flush=True)


# ----------------------------------------------------------------------------------------------------
# 1. the tiny dataset


def write_dataset(root, sizes: dict[str, int] | None = None, seed: int = 0, short_side: int = 224) -> Path:
    """~20 toy-world images with their five captions, as Karpathy's dataset_flickr30k.json lays them out.

    The images are those of `pds.toy.world` (seed 0: the first images of each split of data/raw/toyworld),
    drawn at 32 px and upscaled (bicubic) to `short_side` on the short side at 4:3, landscape and portrait in
    turn, saved as JPEG like Flickr30k's; the annotation entries have Karpathy's Flickr30k keys (no
    `filepath`: the images lie in the dataset root). Returns the annotation file.
    """
    from PIL import Image

    from pds.toy import world
    from pds.toy.captions import make_captions
    from pds.toy.scene import draw_image, sample_attributes

    sizes = sizes or SPLIT_SIZES
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    long_side = round(short_side * 4 / 3)
    entries, imgid = [], 0
    for split in data.SPLITS:
        for k in range(sizes[split]):
            attr_rng, caption_rng, draw_rng = world._image_rngs(seed, split, k)  # as generate_toyworld draws them
            attrs = sample_attributes(attr_rng)
            captions = make_captions(attrs, caption_rng, n=5)
            size = (long_side, short_side) if imgid % 2 == 0 else (short_side, long_side)
            image = draw_image(attrs, 32, draw_rng).resize(size, Image.Resampling.BICUBIC)
            filename = f"{1000000000 + imgid}.jpg"
            data.atomic_write(root / filename, lambda tmp, im=image: im.save(tmp, format="JPEG", quality=95))
            sentids = list(range(5 * imgid, 5 * imgid + 5))
            entries.append({"sentids": sentids, "imgid": imgid, "split": split, "filename": filename,
                            "sentences": [{"tokens": data.preprocess_caption(c, 0).split(), "raw": c, "imgid": imgid,
                                           "sentid": s} for c, s in zip(captions, sentids, strict=True)]})
            imgid += 1
    return data.save_json(root / "dataset_flickr30k.json", {"images": entries, "dataset": "flickr30k"}, indent=None)


# ----------------------------------------------------------------------------------------------------
# 2. random-weight models with the real architectures


def unclip_components(latent_size: int = 16, overrides: dict[str, dict] | None = None) -> dict:
    """The decoder's components from the transcribed configs, randomly initialised (torch's global seed).

    `latent_size` replaces the UNet's `sample_size` (the pipeline's default output side is 8x it);
    `overrides` maps a config name (`unet`, `vae`, `text_encoder`, `image_encoder`) to entries that replace
    the transcribed ones (the tests shrink the widths with it, keeping the conditioning dimensions).
    """
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer,
    )
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    from pds.toy.unclip import build_tokenizer

    over = overrides or {}
    sched = {"DDIMScheduler": DDIMScheduler, "DDPMScheduler": DDPMScheduler}

    def scheduler(config):
        config = dict(config)
        return sched[config.pop("_class_name")](**config)

    unet = UNet2DConditionModel(**(UNET_CONFIG | {"sample_size": latent_size} | over.get("unet", {})))
    vae = AutoencoderKL(**(VAE_CONFIG | over.get("vae", {})))
    text_encoder = CLIPTextModel(CLIPTextConfig(**(TEXT_ENCODER_CONFIG | over.get("text_encoder", {}))))
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**(IMAGE_ENCODER_CONFIG
                                                                      | over.get("image_encoder", {}))))
    return {
        "feature_extractor": CLIPImageProcessor(**FEATURE_EXTRACTOR_CONFIG), "image_encoder": image_encoder.eval(),
        "image_normalizer": StableUnCLIPImageNormalizer(**IMAGE_NORMALIZER_CONFIG),
        "image_noising_scheduler": scheduler(IMAGE_NOISING_SCHEDULER_CONFIG),
        "tokenizer": build_tokenizer(TOKENIZER_MAX_LENGTH), "text_encoder": text_encoder.eval(),
        "unet": unet.eval(), "scheduler": scheduler(SCHEDULER_CONFIG), "vae": vae.eval(),
    }


def save_unclip(folder, latent_size: int = 16, seed: int = 0, overrides: dict[str, dict] | None = None) -> dict:
    """Build the decoder (`unclip_components`) and `save_pretrained` it to `folder`; returns its parameter
    counts per component."""
    import torch
    from diffusers import StableUnCLIPImg2ImgPipeline

    torch.manual_seed(seed)
    pipe = StableUnCLIPImg2ImgPipeline(**unclip_components(latent_size, overrides))
    counts = {name: sum(p.numel() for p in c.parameters()) for name, c in pipe.components.items()
              if isinstance(c, torch.nn.Module)}
    pipe.save_pretrained(str(folder))
    del pipe
    gc.collect()
    return counts


def save_bert(folder, seed: int = 0) -> int:
    """A BERT-base-shaped `BertModel` (BertConfig's defaults: 12 layers, 768 wide) at random weights, saved with
    the MiniLM package's tokenizer (uncased WordPiece, bert-base-uncased's 30,522-token vocabulary); returns
    its parameter count. No `1_Pooling/` folder, so `pds.models.load_text_encoder` pools the CLS token, as for
    bert-base-uncased."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from pds.models import minilm_path

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)
    model = BertModel(BertConfig(vocab_size=tokenizer.vocab_size)).eval()
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    n = sum(p.numel() for p in model.parameters())
    del model
    gc.collect()
    return n


def build_models(unclip_dir: str, bert_dir: str, latent_size: int, seed: int) -> dict:
    """Both saved models (run in a child process, so their memory is returned when it exits)."""
    for folder in (unclip_dir, bert_dir):
        shutil.rmtree(folder, ignore_errors=True)
    unclip = save_unclip(unclip_dir, latent_size, seed)
    bert = save_bert(bert_dir, seed)
    return {"unclip_parameters": unclip, "bert_parameters": bert}


def in_child(fn, *args):
    """fn(*args) in a spawned process (the models' memory goes back to the system when it exits)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


# ----------------------------------------------------------------------------------------------------
# 3. the stages


def load_params(path=None) -> dict:
    return config.load(paths.resolve(path or "params.yaml"))


def dry_run_params(params: dict, out: Path, overrides: dict | None = None) -> dict:
    """params.yaml with OVERRIDES applied (and then `overrides`, param -> value), "<out>" replaced by `out`."""
    p = {section: dict(values) for section, values in params.items()}
    values = {key: value for key, value, _ in OVERRIDES} | (overrides or {})
    for key, value in values.items():
        section, name = key.split(".")
        if section not in p or name not in p[section]:
            raise KeyError(f"params.yaml has no {key}; update studies.dryrun.OVERRIDES.")
        p[section][name] = value.replace("<out>", str(out)) if isinstance(value, str) else value
    return p


def stage_commands(params: dict, out: Path, dvc_yaml=None) -> dict[str, tuple[dict, list[str]]]:
    """dvc.yaml's commands of STAGES with `params` interpolated and repository outputs moved under `out`:
    stage -> (environment variables set by the command, argv). What dvc would run, in another folder."""
    import yaml

    stages = yaml.safe_load(paths.resolve(dvc_yaml or "dvc.yaml").read_text())["stages"]

    def lookup(match):
        section, name = match[1].split(".")
        return str(params[section][name])

    commands = {}
    for name in STAGES:
        env, argv = {}, []
        # the params.yaml check that precedes every stage: the dry run's parameters are a dict, not that file
        cmd = stages[name]["cmd"].split("&&")
        if cmd[0].split() != ["python", "-m", "pds.config"] or len(cmd) != 2:
            raise ValueError(f"dvc.yaml stage {name}: expected `python -m pds.config && <command>`.")
        for token in shlex.split(cmd[1]):
            if not argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", token):
                key, value = token.split("=", 1)
                env[key] = value
                continue
            token = re.sub(r"\$\{([\w.]+)\}", lookup, token)
            if "${" in token:
                raise ValueError(f"dvc.yaml stage {name}: cannot interpolate {token!r}.")
            if token.startswith(OUTPUT_PREFIXES):
                token = str(out / token)
            argv.append(token)
        if name == "evaluate":  # no tm / tm_evaluate stages in the dry run: notebook 05 leaves their students out
            argv = without_tm(argv)
        program = {"papermill": Path(sys.executable).with_name("papermill"), "python": Path(sys.executable)}
        if argv[0] in program and program[argv[0]].exists():
            argv[0] = str(program[argv[0]])
        commands[name] = (env, argv)
    return commands


def without_tm(argv: list[str]) -> list[str]:
    """A papermill command line with its MTT-VL / LoRS inputs (tm_runs, tm_dir) set to "" (as raw strings)."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in ("-p", "--parameters") and i + 2 < len(argv) + 1 and argv[i + 1] in ("tm_runs", "tm_dir"):
            out += ["-r", argv[i + 1], ""]
            i += 3
        else:
            out.append(argv[i])
            i += 1
    return out


def notebook_parameters(argv: list[str]) -> dict[str, str]:
    """The `-p name value` pairs of a papermill command line."""
    return {argv[i + 1]: argv[i + 2] for i in range(len(argv) - 2) if argv[i] in ("-p", "--parameters")}


def run_stage(name: str, env: dict, argv: list[str], log: Path) -> None:
    """One stage's command from the repository root, its output in `log`; raises with the log's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    for token in argv[1:]:  # papermill writes into an existing folder only (the repository's results/notebooks/)
        if token.endswith(".ipynb") and Path(token).is_absolute():
            Path(token).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        rc = subprocess.run(argv, cwd=str(paths.ROOT), env=os.environ | env, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"stage {name} failed (exit {rc}): {' '.join(argv)}\n--- {log} (last lines):\n{tail}")


def notebook_text(path: Path) -> str:
    """All stream and text outputs of an executed notebook, joined."""
    nb = json.loads(Path(path).read_text())
    parts = []
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            if "text" in o:
                parts.append("".join(o["text"]))
            elif "text/plain" in o.get("data", {}):
                parts.append("".join(o["data"]["text/plain"]))
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------------
# 4. checks


class PeakMemory:
    """Samples the summed RSS of this process and all its descendants every `interval` seconds."""

    def __init__(self, interval: float = 0.5):
        import psutil

        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._me = psutil.Process()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        total = 0
        for p in [self._me, *self._me.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def conditioning_check(unclip_dir: Path, clip_dim: int) -> dict:
    """The saved decoder's conditioning interface from its configs, and `pds.models.check_unclip_dim` on it."""
    from types import SimpleNamespace

    from pds.models import check_unclip_dim

    cfg = {name: json.loads((unclip_dir / name / "config.json").read_text())
           for name in ("unet", "image_normalizer", "text_encoder", "image_encoder")}
    pipe = SimpleNamespace(unet=SimpleNamespace(config=cfg["unet"]),
                           image_normalizer=SimpleNamespace(config=SimpleNamespace(**cfg["image_normalizer"])))
    check_unclip_dim(clip_dim, pipe)  # raises on a mismatch
    return {"image_normalizer": cfg["image_normalizer"]["embedding_dim"],
            "unet_class_projection": cfg["unet"]["projection_class_embeddings_input_dim"],
            "unet_cross_attention": cfg["unet"]["cross_attention_dim"],
            "text_encoder_hidden": cfg["text_encoder"]["hidden_size"],
            "image_encoder_projection": cfg["image_encoder"]["projection_dim"],
            "unet_sample_size": cfg["unet"]["sample_size"]}


def check_outputs(out: Path, params: dict) -> dict:
    """Read what the stages wrote and check the real path's shapes; returns the report (raises AssertionError
    naming the first failed check)."""
    from PIL import Image

    d = out / "data"
    n_pairs = int(params["base"]["n_pairs"])
    r = {}
    img, txt = data.load_npy(d / "embeddings" / "image.npy"), data.load_npy(d / "embeddings" / "text.npy")
    n_images = sum(SPLIT_SIZES.values())
    assert img.shape == (n_images, CLIP_EMBED_DIM) and txt.shape == (5 * n_images, CLIP_EMBED_DIM), (img.shape, txt.shape)
    r["clip_embeddings"] = {"image": list(img.shape), "text": list(txt.shape)}
    protos = data.load_npy(d / "prototypes" / "image.npy")
    assert protos.shape == (n_pairs, CLIP_EMBED_DIM), protos.shape
    r["prototypes"] = list(protos.shape)
    cond = conditioning_check(Path(params["synthesize"]["unclip"]), img.shape[1])
    assert cond["unet_cross_attention"] == cond["text_encoder_hidden"] == TEXT_HIDDEN, cond
    assert cond["image_encoder_projection"] == cond["image_normalizer"] == CLIP_EMBED_DIM, cond
    r["unclip_conditioning"] = cond | {"check_unclip_dim": "passed"}
    syn = data.load_table(d / "synthetic" / "synthetic.parquet")
    side = int(params["synthesize"]["image_size"])
    sizes = sorted({Image.open(d / "synthetic" / f).size for f in syn.file})
    assert len(syn) == n_pairs and sizes == [(side, side)], (len(syn), sizes)
    r["synthetic_images"] = {"n": len(syn), "sizes": [list(s) for s in sizes],
                             "decoder_output": cond["unet_sample_size"] * 8, "resized_to": side}
    meta = data.load_json(d / "text_features" / "meta.json")
    feats = data.load_npy(d / "text_features" / "text.npy")
    assert meta["dim"] == 768 and meta["pooling"] == "cls" and feats.shape == (5 * n_images, 768), (meta, feats.shape)
    assert meta["text_encoder"] == params["evaluate"]["text_encoder"], meta
    r["bert_features"] = {"shape": list(feats.shape), "pooling": meta["pooling"]}
    log = notebook_text(out / "results" / "notebooks" / "05_evaluate.ipynb")
    assert "images in memory at 224px" in log, "notebook 05 did not load the images at 224 px"
    r["student_image_size"] = 224
    metrics = data.load_json(out / "results" / "evaluate" / "metrics.json")
    ev = params["evaluate"]
    protocols, encoders, methods = (ev[k].split(",") for k in ("protocol", "image_encoders", "methods"))
    rows = set(results.rows(metrics, "val")[["protocol", "image_encoder", "method"]].itertuples(index=False, name=None))
    want = {(p, e, m) for p in protocols for e in encoders for m in methods}
    assert rows == want, f"metrics.json rows {sorted(rows)} != {sorted(want)}"
    r["metrics_rows"] = {"protocols": protocols, "image_encoders": encoders, "methods": methods,
                         "rows_selected_on_val": len(rows)}
    return r


# ----------------------------------------------------------------------------------------------------
# the command


def check_out(out: Path) -> None:
    """Refuse an --out that would put the dry run's outputs over the repository's own (data/, results/...)."""
    root, o = paths.ROOT.resolve(), out.resolve()
    guarded = [root] + [root / sub for sub in ("data", "results", "models", "notebooks", "pds", "tests")]
    if any(o == g or g in o.parents for g in guarded[1:]) or o == root:
        raise ValueError(f"--out {out} would write over the repository's own files; use e.g. build/dryrun-real.")


def run(out, n_pairs: int = 4, image_encoders: str = IMAGE_ENCODERS, methods: str = METHODS, steps: int = 2,
        latent_size: int = 16, seed: int = 0, keep_models: bool = False) -> dict:
    """The whole dry run into `out`; returns (and writes to <out>/report.json) the report."""
    out = paths.resolve(out)
    check_out(out)
    # nothing may be downloaded: every loader reads a local folder or builds random weights
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                       "PDS_PROGRESS": "0"})
    params = dry_run_params(load_params(), out, {
        "base.n_pairs": n_pairs, "evaluate.image_encoders": image_encoders, "evaluate.methods": methods,
        "synthesize.num_inference_steps": steps})
    commands = stage_commands(params, out)
    unclip, bert = Path(params["synthesize"]["unclip"]), Path(params["evaluate"]["text_encoder"])
    timings, total, start = {}, 2 + len(STAGES), time.perf_counter()
    with PeakMemory() as mem:
        t = time.perf_counter()
        for sub in ("data", "results", "logs"):
            shutil.rmtree(out / sub, ignore_errors=True)
        ann = write_dataset(out / "data" / "raw" / params["base"]["dataset"], seed=0)  # dvc.yaml: data/raw/<dataset>
        timings["dataset"] = time.perf_counter() - t
        step(1, total, "dataset", t, f"{sum(SPLIT_SIZES.values())} toy images upscaled to 224 px (short side), "
             f"{'/'.join(str(v) for v in SPLIT_SIZES.values())} train/val/test, Karpathy format {ann.name}")

        t = time.perf_counter()
        counts = in_child(build_models, str(unclip), str(bert), latent_size, seed)
        timings["models"] = time.perf_counter() - t
        step(2, total, "models", t, f"random unCLIP ({sum(counts['unclip_parameters'].values()) / 1e6:,.0f}M "
             f"parameters, UNet {counts['unclip_parameters']['unet'] / 1e6:,.0f}M, {latent_size * 8}-px output) and "
             f"BERT-base ({counts['bert_parameters'] / 1e6:.0f}M) saved")

        for k, name in enumerate(STAGES, start=3):
            t = time.perf_counter()
            env, argv = commands[name]
            run_stage(name, env, argv, out / "logs" / f"{name}.log")
            timings[name] = time.perf_counter() - t
            step(k, total, name, t, f"{Path(argv[0]).name} {' '.join(argv[1:2] if 'papermill' in argv[0] else argv[1:3])}"
                 f" (log: logs/{name}.log)")
    report = check_outputs(out, params)
    report |= {"seconds": {k: round(v, 1) for k, v in timings.items()},
               "total_seconds": round(time.perf_counter() - start, 1),
               "peak_rss_gib": round(mem.peak / 2 ** 30, 2),
               "model_parameters": counts,
               "commands": {name: " ".join([*(f"{k}={v}" for k, v in env.items()), *map(shlex.quote, argv)])
                            for name, (env, argv) in commands.items()},
               "overrides": [{"param": k, "dry_run": params[k.split(".")[0]][k.split(".")[1]],
                              "real": "params.yaml" if real is PARAMS_YAML else real} for k, _, real in OVERRIDES]}
    if not keep_models:  # the decoder alone is 6.4 GB of fp32 safetensors
        shutil.rmtree(unclip, ignore_errors=True)
    data.save_json(out / "report.json", report)
    return report


def print_report(r: dict, out) -> None:
    c, s = r["unclip_conditioning"], r["synthetic_images"]
    m = r["metrics_rows"]
    lines = [
        f"CLIP ViT-L-14 embeddings: images {tuple(r['clip_embeddings']['image'])}, captions "
        f"{tuple(r['clip_embeddings']['text'])}; prototypes {tuple(r['prototypes'])}",
        f"unCLIP conditioning: normaliser {c['image_normalizer']}-d, UNet class projection "
        f"{c['unet_class_projection']} = 2 x {c['image_normalizer']}, cross-attention {c['unet_cross_attention']} = "
        f"text encoder width {c['text_encoder_hidden']}; check_unclip_dim passed",
        f"synthetic images: {s['n']}, decoded at {s['decoder_output']} px, written at {s['sizes']}",
        f"BERT features: {tuple(r['bert_features']['shape'])} ({r['bert_features']['pooling']} pooling)",
        f"students: {r['student_image_size']}-px images; metrics.json: {m['rows_selected_on_val']} val-selected rows "
        f"= {len(m['protocols'])} protocols x {len(m['image_encoders'])} encoders x {len(m['methods'])} methods",
        f"total {r['total_seconds'] / 60:.1f} min, peak memory {r['peak_rss_gib']:.1f} GiB (this process and its "
        f"children); report: {out}/report.json",
    ]
    print("dry run passed:\n  " + "\n  ".join(lines), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Real-architecture dry run of stages 01-05 at random weights (CPU, "
                                                 "no download).")
    parser.add_argument("--out", default="/tmp/pds-dryrun", help="output folder (not data/ or results/)")
    parser.add_argument("--n-pairs", type=int, default=4, help="M")
    parser.add_argument("--image-encoders", default=IMAGE_ENCODERS)
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--steps", type=int, default=2, help="denoising steps")
    parser.add_argument("--latent-size", type=int, default=16, help="UNet sample_size (the checkpoint's: 96)")
    parser.add_argument("--keep-models", action="store_true", help="keep the 6.4 GB decoder folder afterwards")
    args = parser.parse_args(argv)
    report = run(args.out, args.n_pairs, args.image_encoders, args.methods, args.steps, args.latent_size,
                 keep_models=args.keep_models)
    print_report(report, paths.resolve(args.out))


if __name__ == "__main__":
    main()
