"""Train the toy models (stage toymodels): the toy CLIP, then the toy unCLIP decoder conditioned on it.

    python -m pds.toy.train --world data/raw/toyworld --out models/toyworld

writes `<out>/toy-clip/` (open_clip local-dir folder) and `<out>/toy-unclip/` (diffusers pipeline folder).
Seeded and deterministic on CPU (for a given --threads); progress bars per phase; timings are printed.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import open_clip
import torch

from pds import data
from pds.paths import resolve
from pds.toy import clip as toy_clip
from pds.toy import unclip as toy_unclip
from pds.toy import world


def load_split_arrays(world_root, split: str = "train"):
    """One split of the toy world in memory: uint8 images (N, H, W, 3), the captions (list, n_captions)
    and each caption's image row (n_captions,)."""
    images, captions = data.load_dataset(world_root, ann_file=world.ANN_FILE)
    images = images[images.split == split].reset_index(drop=True)
    if images.empty:
        raise ValueError(f"{world_root} has no {split!r} images; regenerate the toy world.")
    row = {int(i): r for r, i in enumerate(images.image_id)}
    captions = captions[captions.split == split]
    pixels = np.stack([np.asarray(data.load_image(world_root, p)) for p in images.path])  # (N, H, W, 3)
    caption_image = np.array([row[int(i)] for i in captions.image_id], dtype=np.int64)  # (n_captions,)
    return torch.from_numpy(pixels), captions.caption.tolist(), caption_image


def train_clip(world_root, out_dir, seed: int = 0, steps: int = 1500, batch_size: int = 128, lr: float = 1e-3,
               embed_dim: int = 64, patch_size: int = 8, vision_width: int = 128, vision_layers: int = 3,
               text_width: int = 64, text_layers: int = 2, context_length: int = 32, shift: int = 0) -> dict:
    """Train and save the toy CLIP; returns a small log (seconds, final loss)."""
    t0 = time.time()
    torch.manual_seed(seed)
    config = toy_clip.toy_clip_config(embed_dim=embed_dim, patch_size=patch_size, vision_width=vision_width,
                                      vision_layers=vision_layers, text_width=text_width, text_layers=text_layers,
                                      context_length=context_length)
    images, captions, caption_image = load_split_arrays(world_root, "train")
    config["model_cfg"]["vision_cfg"]["image_size"] = config["preprocess_cfg"]["size"] = int(images.shape[1])
    tokens = open_clip.SimpleTokenizer(context_length=context_length)(captions)  # (n_captions, L)
    model = toy_clip.build_toy_clip(config)
    losses = toy_clip.train_toy_clip(model, config, images, tokens, caption_image, steps=steps,
                                     batch_size=batch_size, lr=lr, seed=seed, shift=shift)
    toy_clip.save_toy_clip(model, config, out_dir)
    return {"seconds": round(time.time() - t0, 1), "steps": steps, "final_loss": float(np.mean(losses[-50:]))}


def train_unclip(world_root, clip_dir, out_dir, seed: int = 0, vae_width: int = 32, latent_channels: int = 4,
                 vae_steps: int = 1000, vae_batch_size: int = 32, vae_lr: float = 2e-3, vae_fg_weight: float = 0.0,
                 unet_steps: int = 2000, unet_batch_size: int = 64, unet_lr: float = 1e-3, unet_snr_gamma: float = 0.0,
                 unet_snr_floor: float = 0.0, text_hidden: int = 64, text_layers: int = 2, max_noise_level: int = 300) -> dict:
    """Train and save the toy unCLIP decoder on the toy CLIP in `clip_dir`; returns a small log."""
    import shutil

    t0 = time.time()
    images, captions, caption_image = load_split_arrays(world_root, "train")
    # open_clip directly (not pds.models): this stage then depends only on pds/toy code
    clip_model = open_clip.create_model(f"local-dir:{Path(clip_dir).resolve()}").eval()
    clip_config = json.loads((Path(clip_dir) / toy_clip.CONFIG_FILE).read_text())
    embeds = toy_clip.encode_images(clip_model, clip_config, images).float()  # (N, d) unnormalised
    context_length = clip_config["model_cfg"]["text_cfg"]["context_length"]
    torch.manual_seed(seed)
    comps = toy_unclip.build_components(embeds.shape[1], image_size=int(images.shape[1]), text_hidden=text_hidden,
                                        text_layers=text_layers, max_length=context_length,
                                        vae_channels=(vae_width, 2 * vae_width), latent_channels=latent_channels)
    toy_unclip.fit_normalizer(comps["image_normalizer"], embeds)
    vae_losses = toy_unclip.train_vae(comps["vae"], images, steps=vae_steps, batch_size=vae_batch_size, lr=vae_lr,
                                      fg_weight=vae_fg_weight, seed=seed)
    t_vae = time.time() - t0
    latent_mean, latent_std = toy_unclip.encode_latents(comps["vae"], images)
    # unit-variance latents for the diffusion model; written to the config so save_pretrained keeps it
    scaling = 1.0 / float((latent_mean + latent_std * torch.randn(latent_mean.shape,
                                                                  generator=torch.Generator().manual_seed(seed))).std())
    comps["vae"].register_to_config(scaling_factor=scaling)
    tokens = toy_unclip.tokenize(comps["tokenizer"], captions)
    unet_losses = toy_unclip.train_decoder(comps, latent_mean, latent_std, embeds, tokens, caption_image,
                                           steps=unet_steps, batch_size=unet_batch_size, lr=unet_lr,
                                           max_noise_level=max_noise_level, seed=seed,
                                           snr_gamma=unet_snr_gamma or None, snr_floor=unet_snr_floor)
    out_dir = Path(out_dir)
    if (out_dir / "model_index.json").exists():
        shutil.rmtree(out_dir)  # no stale component files from an earlier configuration
    toy_unclip.assemble(comps).save_pretrained(out_dir, safe_serialization=True)
    return {"seconds": round(time.time() - t0, 1), "vae_seconds": round(t_vae, 1), "vae_steps": vae_steps,
            "vae_final_mse": float(np.mean(vae_losses[-50:])), "unet_steps": unet_steps,
            "unet_final_loss": float(np.mean(unet_losses[-100:])), "latent_scaling_factor": round(scaling, 5)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train the toy CLIP and the toy unCLIP decoder on the toy world.")
    p.add_argument("--world", default="data/raw/toyworld", help="toy world folder (Karpathy format)")
    p.add_argument("--out", default="models/toyworld", help="writes <out>/toy-clip and <out>/toy-unclip")
    p.add_argument("--models", default="clip,unclip", help="comma-separated subset of clip,unclip")
    p.add_argument("--seed", type=int, default=0, help="seeds the CLIP (and the decoder unless --unclip-seed)")
    p.add_argument("--unclip-seed", type=int, default=None,
                   help="seeds the decoder's VAE and UNet (default: --seed); the decoder's training noise is "
                        "as large as its hyper-parameters' effects, so it is chosen on validation like them")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on shared cores)")
    p.add_argument("--clip-steps", type=int, default=1500)
    p.add_argument("--clip-batch-size", type=int, default=128)
    p.add_argument("--clip-lr", type=float, default=1e-3)
    p.add_argument("--clip-embed-dim", type=int, default=64)
    p.add_argument("--vae-width", type=int, default=32, help="VAE channels: (width, 2 x width)")
    p.add_argument("--latent-channels", type=int, default=4)
    p.add_argument("--vae-steps", type=int, default=1000)
    p.add_argument("--vae-lr", type=float, default=2e-3)
    p.add_argument("--vae-fg-weight", type=float, default=0.0, help="extra loss weight of saturated pixels")
    p.add_argument("--unet-steps", type=int, default=2000)
    p.add_argument("--unet-batch-size", type=int, default=64)
    p.add_argument("--unet-lr", type=float, default=1e-3)
    p.add_argument("--unet-snr-gamma", type=float, default=0.0, help="Min-SNR-gamma loss weighting (0: plain loss)")
    p.add_argument("--unet-snr-floor", type=float, default=0.0,
                   help="lowest Min-SNR weight, so that the highest-noise steps keep some (0: plain Min-SNR)")
    p.add_argument("--text-hidden", type=int, default=64, help="width of the decoder's caption encoder")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    world, out = resolve(args.world), resolve(args.out)
    which = {m.strip() for m in args.models.split(",") if m.strip()}
    if not which or which - {"clip", "unclip"}:
        raise ValueError(f"--models {args.models!r}: use a comma-separated subset of clip,unclip.")
    # the logs (with timings) go to stdout only: files in the model folders stay byte-reproducible
    if "clip" in which:
        log = train_clip(world, out / "toy-clip", seed=args.seed, steps=args.clip_steps,
                         batch_size=args.clip_batch_size, lr=args.clip_lr, embed_dim=args.clip_embed_dim)
        print(f"toy CLIP: {json.dumps(log)}")
    if "unclip" in which:
        log = train_unclip(world, out / "toy-clip", out / "toy-unclip",
                           seed=args.seed if args.unclip_seed is None else args.unclip_seed, vae_width=args.vae_width,
                           latent_channels=args.latent_channels, vae_steps=args.vae_steps, vae_lr=args.vae_lr,
                           vae_fg_weight=args.vae_fg_weight, unet_steps=args.unet_steps, unet_batch_size=args.unet_batch_size,
                           unet_lr=args.unet_lr, unet_snr_gamma=args.unet_snr_gamma,
                           unet_snr_floor=args.unet_snr_floor, text_hidden=args.text_hidden)
        print(f"toy unCLIP: {json.dumps(log)}")


if __name__ == "__main__":
    main()
