"""The one reader of params.yaml: every section and key checked (unknown keys, types, ranges, names) before any
stage does work. Every dvc.yaml stage runs `python -m pds.config` first, so a misspelt key stops the first stage
that runs with one line naming it and the closest valid key.

    python -m pds.config                 # check params.yaml: "params.yaml: ok" or one line saying what to change
    from pds import config; p = config.load()   # the checked parameters, as a dict of sections
"""

import difflib
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from pds import paths

PARAMS = paths.ROOT / "params.yaml"


def _int(lo=None, hi=None):
    return ("int", lo, hi)


def _float(lo=None, hi=None, hi_open=False):
    return ("float", lo, hi, hi_open)


def _choice(*names):
    return ("choice", names)


def _names(source: Callable[[], tuple] | tuple, allow=None):
    """A comma-separated list of names, each from `source` (or accepted by `allow`, e.g. a timm model name)."""
    return ("names", source, allow)


def _methods():
    from pds import evaluate
    return evaluate.METHODS


def _protocols():
    from pds import evaluate
    return evaluate.PROTOCOLS


def _students():
    from pds.students import STUDENTS
    return STUDENTS


def _timm_model(name: str) -> bool:  # the real path's students (nfnet_l0, vit_tiny_patch16_224, ...)
    import timm
    return timm.is_model(name)


def _algorithms():
    from pds import cluster
    return cluster.ALGORITHMS


def _empty():
    from pds import match
    return match.EMPTY


WORLD = {"n_train": _int(1), "n_val": _int(1), "n_test": _int(1), "image_size": _int(8), "seed": _int(0),
         "caption_mention_rate": ("mention",), "caption_noise": _float(0, 1), "caption_variation": _float(0, 1),
         "secondary_rate": _float(0, 1), "mismatch_rate": _float(0, 1, hi_open=True), "clutter": _float(0),
         "background_texture": _float(0, 1), "zipf_exponent": _float(0), "n_shapes": _int(1), "n_colours": _int(1)}

SCHEMA = {
    "base": {"seed": _int(0), "dataset": ("dataset",), "n_pairs": _int(1)},
    "toyworld": ("worlds", WORLD),
    "toymodels": {"seed": _int(0), "unclip_seed": _int(0), "clip_steps": _int(1), "clip_batch_size": _int(1),
                  "clip_lr": _float(0), "clip_embed_dim": _int(1), "vae_width": _int(1), "latent_channels": _int(1),
                  "vae_steps": _int(1), "vae_lr": _float(0), "vae_fg_weight": _float(0), "unet_steps": _int(1),
                  "unet_batch_size": _int(1), "unet_lr": _float(0), "unet_snr_gamma": _float(0),
                  "unet_snr_floor": _float(0, 1), "text_hidden": _int(1), "encoders_n_images": _int(1),
                  "encoders_epochs": _int(1), "encoders_seed": _int(0), "quality_n": _int(1), "quality_steps": _int(1),
                  "quality_guidance_scale": _float(0), "quality_noise_level": _int(0), "quality_eta": _float(0, 1),
                  "threads": _int(1)},
    "embed": {"ann_format": _choice("karpathy", "blip"), "ann_file": ("str",), "max_words": _int(1),
              "clip_model": ("str",), "clip_pretrained": ("str",)},
    "cluster": {"rm_ratio": _float(0, 1, hi_open=True), "algorithm": _names(_algorithms), "batch_size": _int(1),
                "n_init": _int(1)},
    "match": {"empty": _names(_empty)},
    "synthesize": {"unclip": ("str",), "num_inference_steps": _int(1), "guidance_scale": _float(0),
                   "noise_level": _int(0), "eta": _float(0, 1), "negative_prompt": ("str",), "image_size": _int(8)},
    "tm": {"encoder": _names(_students), "n_experts": _int(1), "epochs": _int(1), "lr_image": _float(0),
           "lr_text": _float(0), "iterations": _int(0), "syn_steps": _int(1), "expert_epochs": _int(1),
           "max_start_epoch": _int(1), "mini_batch": _int(1), "lr_img": _float(0), "lr_txt": _float(0),
           "lr_lr": _float(0), "rank": _int(1), "alpha": _float(0), "lr_sim": _float(0)},
    "evaluate": {"protocol": _names(_protocols), "text_encoder": ("str",),
                 "image_encoders": _names(_students, allow=_timm_model), "pretrained": _choice("toy", "none", "imagenet"),
                 "methods": _names(_methods), "text_target": _choice("prototype", "caption"), "epochs": _int(1),
                 "full_epochs": _int(1), "full_one_per_image": _choice(0, 1), "full_seeds": _int(0), "lr": _float(0),
                 "lr_image": _float(0), "batch_size": _int(1), "eval_every": _int(1), "paper_lr": _float(0),
                 "paper_epochs": _int(1), "paper_lr_step": _int(1), "seeds": _int(1)},
}


class ConfigError(ValueError):
    """A params.yaml entry that must change: the message names it and says how."""


def _closest(name: str, valid) -> str:
    near = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.5)
    return f" (did you mean {near[0]!r}?)" if near else f" (valid: {', '.join(valid)})"


def _check_value(where: str, value, rule, params: dict) -> None:
    kind = rule[0]
    if kind in ("int", "float"):
        ok_type = isinstance(value, int) if kind == "int" else isinstance(value, int | float)
        if not ok_type or isinstance(value, bool):
            raise ConfigError(f"{where} = {value!r}: must be {'an integer' if kind == 'int' else 'a number'}.")
        lo, hi = rule[1], rule[2]
        hi_open = kind == "float" and rule[3]
        if lo is not None and value < lo:
            raise ConfigError(f"{where} = {value!r}: must be at least {lo}; raise it.")
        if hi is not None and (value >= hi if hi_open else value > hi):
            raise ConfigError(f"{where} = {value!r}: must be {'below' if hi_open else 'at most'} {hi}; lower it.")
    elif kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{where} = {value!r}: must be a string.")
    elif kind == "choice":
        if isinstance(value, bool) or value not in rule[1]:  # True == 1: a YAML bool is not the 0/1 asked for
            raise ConfigError(f"{where} = {value!r}: must be one of {', '.join(map(str, rule[1]))}.")
    elif kind == "names":
        source, allow = rule[1], rule[2]
        valid = source() if callable(source) else source
        names = [n for n in str(value).split(",") if n]
        if not names:
            raise ConfigError(f"{where} is empty: name at least one of {', '.join(valid)}.")
        for n in names:
            if n not in valid and not (allow and allow(n)):
                raise ConfigError(f"{where}: unknown name {n!r}{_closest(n, valid)}.")
    elif kind == "mention":  # the realistic world's rate, or `legacy` for the first world's captions
        if value != "legacy":
            _check_value(where, value, _float(0, 1), params)
    elif kind == "dataset":
        worlds = params.get("toyworld") or {}
        if value not in worlds and not (paths.ROOT / "data" / "raw" / str(value)).is_dir():
            raise ConfigError(f"{where} = {value!r}: neither a toyworld entry ({', '.join(worlds)}) nor a folder "
                              f"data/raw/{value}; add the world under toyworld: or put the dataset there.")
    else:  # pragma: no cover - a rule this module does not know is a bug here, not in params.yaml
        raise AssertionError(kind)


def _check_section(name: str, values, schema: dict, params: dict) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"{name}: must be a mapping of keys to values, not {type(values).__name__}.")
    for key, value in values.items():
        if key not in schema:
            raise ConfigError(f"{name}.{key}: unknown key{_closest(key, schema)}; rename or remove it.")
        _check_value(f"{name}.{key}", value, schema[key], params)
    missing = [k for k in schema if k not in values]
    if missing:
        raise ConfigError(f"{name}: missing {', '.join(missing)}; add them (see the comments in params.yaml).")


def check(params: dict) -> dict:
    """Raise ConfigError (one line) at the first unknown section or key, wrong type, value out of range or unknown
    name; return `params` unchanged when every entry is valid."""
    if not isinstance(params, dict):
        raise ConfigError("params.yaml must be a mapping of sections.")
    for section, values in params.items():
        if section not in SCHEMA:
            raise ConfigError(f"{section}: unknown section{_closest(section, SCHEMA)}; rename or remove it.")
        rule = SCHEMA[section]
        if isinstance(rule, tuple):  # worlds: one entry per name, each with every knob
            if not isinstance(values, dict) or not values:
                raise ConfigError(f"{section}: must name at least one world.")
            for world, knobs in values.items():
                _check_section(f"{section}.{world}", knobs, rule[1], params)
        else:
            _check_section(section, values, rule, params)
    missing = [s for s in SCHEMA if s not in params]
    if missing:
        raise ConfigError(f"missing section(s) {', '.join(missing)}.")
    e = params["evaluate"]
    if e["paper_lr_step"] > e["paper_epochs"]:
        raise ConfigError(f"evaluate.paper_lr_step = {e['paper_lr_step']} is after the last epoch "
                          f"(evaluate.paper_epochs = {e['paper_epochs']}); lower it.")
    return params


def load(path=PARAMS) -> dict:
    """params.yaml, checked (see `check`); a missing or unparsable file is named."""
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not found; run from the repository or pass the file.") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())}).") from None
    try:
        return check(params)
    except ConfigError as err:
        raise ConfigError(f"{path.name}: {err}") from None


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else PARAMS
    try:
        load(path)
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{path.name}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
