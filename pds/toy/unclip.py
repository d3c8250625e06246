"""Toy unCLIP decoder (stage toymodels): a miniature `StableUnCLIPImg2ImgPipeline` trained on the toy world,
conditioned on toy-CLIP image embeddings, saved with `save_pretrained` so it loads exactly like
`stabilityai/stable-diffusion-2-1-unclip-small`.

Training follows Stable unCLIP: the UNet's class embedding (`class_embed_type="projection"`) receives the
noise-augmented image embedding concatenated with the sinusoidal embedding of its noise level, and the
UNet cross-attends to the caption through a small CLIP text encoder trained jointly with it.
"""

import functools
import gzip
import math

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    StableUnCLIPImg2ImgPipeline,
    UNet2DConditionModel,
)
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
from diffusers.training_utils import compute_snr
from open_clip.tokenizer import bytes_to_unicode, default_bpe
from tqdm.auto import tqdm
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from pds.toy.clip import caption_table, epoch_batches

BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# ----------------------------------------------------------------------------------------------------
# components


def bpe_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's BPE vocabulary (49,408 tokens) and merge list, rebuilt from open_clip's bundled BPE file in
    the order open_clip's SimpleTokenizer uses, so both tokenizers give the same ids."""
    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    merges = [tuple(line.split()) for line in lines]
    byte_chars = list(bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges] + [BOS, EOS]
    return {tok: i for i, tok in enumerate(vocab)}, merges


def build_tokenizer(max_length: int = 32) -> CLIPTokenizer:
    """A CLIPTokenizer over open_clip's BPE; pads with end-of-text to `max_length` like OpenAI's CLIP."""
    vocab, merges = bpe_vocab_and_merges()
    tok = CLIPTokenizer(vocab=vocab, merges=merges, unk_token=EOS, bos_token=BOS, eos_token=EOS, pad_token=EOS)
    tok.model_max_length = max_length
    return tok


def build_components(embed_dim: int, image_size: int = 32, text_hidden: int = 64, text_layers: int = 2,
                     max_length: int = 32, vae_channels: tuple[int, int] = (16, 32), latent_channels: int = 4,
                     vae_attention: bool = False,
                     unet_channels: tuple[int, int] = (32, 64), attention_heads: int = 4,
                     image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5)) -> dict:
    """Randomly initialised pipeline components (torch's global seed decides the weights).

    The VAE downsamples once (32x32 -> 16x16x4 latents; flat-coloured shapes need no attention); the UNet works at 16x16 and 8x8 with cross-attention
    at 8x8 and in the mid block. `image_encoder` is a tiny random CLIP vision tower with the right
    projection size: the pipeline requires one, but it is only used when called with `image=` instead of
    `image_embeds=` (never, here).
    """
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels, layers_per_block=1,
                        block_out_channels=tuple(vae_channels), norm_num_groups=vae_channels[0] // 2,
                        sample_size=image_size, mid_block_add_attention=vae_attention,
                        down_block_types=("DownEncoderBlock2D",) * len(vae_channels),
                        up_block_types=("UpDecoderBlock2D",) * len(vae_channels))
    latent_size = image_size // 2 ** (len(vae_channels) - 1)
    unet = UNet2DConditionModel(
        sample_size=latent_size, in_channels=latent_channels, out_channels=latent_channels, layers_per_block=1,
        block_out_channels=tuple(unet_channels), norm_num_groups=16,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=text_hidden, attention_head_dim=attention_heads,
        # scale-and-shift (FiLM) conditioning: the embedding steers every resnet more strongly than a bias
        resnet_time_scale_shift="scale_shift",
        class_embed_type="projection", projection_class_embeddings_input_dim=2 * embed_dim)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=text_hidden, intermediate_size=2 * text_hidden, num_hidden_layers=text_layers,
        num_attention_heads=max(1, text_hidden // 32), max_position_embeddings=max_length,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, projection_dim=text_hidden))
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4, image_size=image_size,
        patch_size=8, projection_dim=embed_dim))
    feature_extractor = CLIPImageProcessor(crop_size=image_size, size=image_size, image_mean=list(image_mean),
                                           image_std=list(image_std))
    return {
        "feature_extractor": feature_extractor, "image_encoder": image_encoder,
        "image_normalizer": StableUnCLIPImageNormalizer(embedding_dim=embed_dim),
        # Stable unCLIP's embedding-noising schedule
        "image_noising_scheduler": DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2"),
        "tokenizer": build_tokenizer(max_length), "text_encoder": text_encoder, "unet": unet,
        # cosine schedule (improved DDPM) with v-prediction: at 16x16 latents the image is decided at high
        # noise, where an epsilon-prediction's x0 estimate divides by ~0 and its small errors explode
        "scheduler": DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                   prediction_type="v_prediction", clip_sample=False, set_alpha_to_one=False,
                                   timestep_spacing="leading", steps_offset=1),
        "vae": vae,
    }


def assemble(components: dict) -> StableUnCLIPImg2ImgPipeline:
    pipe = StableUnCLIPImg2ImgPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ----------------------------------------------------------------------------------------------------
# training


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1], the VAE's input range."""
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def train_vae(vae: AutoencoderKL, images: torch.Tensor, steps: int, batch_size: int = 32, lr: float = 1e-3,
              kl_weight: float = 1e-4, fg_weight: float = 0.0, seed: int = 0, progress: bool = True) -> list[float]:
    """Fit the VAE in place to uint8 images (N, H, W, 3): weighted per-pixel MSE + `kl_weight` * KL (per
    latent element), on epochs of a seeded permutation. Returns the (weighted) reconstruction MSE per step.

    Each pixel's squared error is weighted by 1 + `fg_weight` * its saturation (max - min channel, in [0, 1]):
    the toy world's backgrounds are grey and its objects saturated, so a plain MSE spends the small VAE's
    capacity on background (stripes) and blurs the few object pixels that carry shape. This is the toy
    stand-in for the perceptual loss real Stable Diffusion VAEs are trained with.
    """
    gen = torch.Generator().manual_seed(seed)
    batches = epoch_batches(len(images), batch_size, gen)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    vae.train()
    losses = []
    bar = tqdm(range(steps), desc="toy unCLIP: VAE", unit="step", disable=not progress)
    for step in bar:
        x = to_unit_range(images[next(batches)])
        for g in opt.param_groups:  # cosine decay: the last steps polish the reconstructions
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        weight = 1 + fg_weight * (x.amax(1, keepdim=True) - x.amin(1, keepdim=True)) / 2  # (B, 1, H, W)
        mse = ((rec - x) ** 2 * weight).mean() / weight.mean()
        kl = 0.5 * (post.mean ** 2 + post.var - 1.0 - post.logvar).mean()
        opt.zero_grad(set_to_none=True)
        (mse + kl_weight * kl).backward()
        opt.step()
        losses.append(float(mse.detach()))
        if step % 20 == 0:
            bar.set_postfix(mse=f"{np.mean(losses[-20:]):.4f}")
    vae.eval()
    return losses


@torch.inference_mode()
def encode_latents(vae: AutoencoderKL, images: torch.Tensor, batch_size: int = 500):
    """Posterior mean and std of uint8 images (N, H, W, 3) -> two (N, 4, h, w) tensors."""
    means, stds = [], []
    for i in range(0, len(images), batch_size):
        post = vae.encode(to_unit_range(images[i:i + batch_size])).latent_dist
        means.append(post.mean)
        stds.append(post.std)
    return torch.cat(means), torch.cat(stds)


def noise_image_embeddings(image_embeds: torch.Tensor, noise_level: torch.Tensor, normalizer,
                           noising_scheduler, noise: torch.Tensor) -> torch.Tensor:
    """Stable unCLIP's embedding conditioning with one noise level per row: normalise, noise with the
    image-noising scheduler, un-normalise, append the sinusoidal noise-level embedding.

    image_embeds (B, d), noise_level (B,) int -> (B, 2d). Equals the pipeline's `noise_image_embeddings`
    when every row has the same level.
    """
    x = normalizer.scale(image_embeds)
    x = noising_scheduler.add_noise(x, timesteps=noise_level, noise=noise)
    x = normalizer.unscale(x)
    level = get_timestep_embedding(noise_level, embedding_dim=x.shape[-1], flip_sin_to_cos=True,
                                   downscale_freq_shift=0).to(x.dtype)
    return torch.cat([x, level], dim=1)


def train_decoder(components: dict, latent_mean: torch.Tensor, latent_std: torch.Tensor, embeds: torch.Tensor,
                  tokens: torch.Tensor, caption_image: np.ndarray, steps: int, batch_size: int = 64,
                  lr: float = 8e-4, max_noise_level: int = 300, p_drop_both: float = 0.10,
                  p_drop_text: float = 0.25, p_drop_image: float = 0.05, ema_decay: float = 0.998, seed: int = 0,
                  snr_gamma: float | None = None, snr_floor: float = 0.0, progress: bool = True, callback=None,
                  callback_every: int = 1000) -> list[float]:
    """Train the UNet and the text encoder jointly (the scheduler's prediction type), in place; returns the
    loss per step.

    latent_mean / latent_std: (N, 4, h, w) VAE posteriors of the N training images; embeds: (N, d) their
    toy-CLIP image embeddings (unnormalised); tokens: (n_captions, L) the decoder tokenizer's ids;
    caption_image: (n_captions,) image row of each caption. The embedding is noise-augmented at level 0
    half the time, otherwise uniform in [0, max_noise_level). Dropout for classifier-free guidance gives
    exactly the pipeline's unconditional input (zero class vector, empty prompt): both dropped with
    `p_drop_both`, caption only with `p_drop_text`, embedding only with `p_drop_image`. The final weights
    are an exponential moving average (`ema_decay`) of the trained ones. `callback(step)`, if given, runs
    every `callback_every` steps with the average weights in place (to watch quality while training).
    `snr_gamma`, if given, weights each sample's loss by Min-SNR-gamma (Hang et al. 2023: min(SNR, gamma),
    divided by SNR + 1 for v-prediction). On the toy world it moves weight from the high-noise steps, where
    layout is decided, to the middle ones: shape improves and layout is lost (models/README.md).
    `snr_floor` raises every Min-SNR weight to at least that value, so the highest-noise steps keep some
    weight (0: plain Min-SNR).
    """

    if snr_floor and not snr_gamma:
        raise ValueError(f"snr_floor={snr_floor} floors Min-SNR weights, but snr_gamma is {snr_gamma}: "
                         "set snr_gamma (toymodels.unet_snr_gamma) too, or snr_floor to 0.")
    unet, text_encoder = components["unet"], components["text_encoder"]
    normalizer, noising = components["image_normalizer"], components["image_noising_scheduler"]
    train_sched = DDPMScheduler.from_config(components["scheduler"].config)
    scaling = components["vae"].config.scaling_factor
    tokenizer = components["tokenizer"]
    empty = tokenizer([""], padding="max_length", max_length=tokens.shape[1], truncation=True,
                      return_tensors="pt").input_ids[0]
    gen = torch.Generator().manual_seed(seed)
    table, counts = caption_table(caption_image, len(embeds))
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    ema = [p.detach().clone() for p in params]
    unet.train()
    text_encoder.train()
    batches = epoch_batches(len(embeds), batch_size, gen)
    losses = []
    bar = tqdm(range(steps), desc="toy unCLIP: UNet", unit="step", disable=not progress)
    for step in bar:
        idx = next(batches)
        b = len(idx)
        pick = (torch.rand(b, generator=gen) * counts[idx]).long()
        ids = tokens[table[idx, pick]].clone()  # (B, L)
        z = (latent_mean[idx] + latent_std[idx] * torch.randn(latent_mean[idx].shape, generator=gen)) * scaling
        level = torch.where(torch.rand(b, generator=gen) < 0.5, 0,
                            torch.randint(0, max_noise_level, (b,), generator=gen))
        with torch.no_grad():
            cond = noise_image_embeddings(embeds[idx], level, normalizer, noising,
                                          torch.randn(embeds[idx].shape, generator=gen))  # (B, 2d)
        u = torch.rand(b, generator=gen)
        drop_text = u < p_drop_both + p_drop_text
        drop_image = (u < p_drop_both) | ((u >= p_drop_both + p_drop_text) &
                                          (u < p_drop_both + p_drop_text + p_drop_image))
        ids[drop_text] = empty
        cond[drop_image] = 0.0
        noise = torch.randn(z.shape, generator=gen)
        t = torch.randint(0, train_sched.config.num_train_timesteps, (b,), generator=gen)
        noisy = train_sched.add_noise(z, noise, t)
        for g in opt.param_groups:  # short warm-up, then constant
            g["lr"] = lr * min(1.0, (step + 1) / 100)
        hidden = text_encoder(ids)[0]  # (B, L, text_hidden), what the pipeline's encode_prompt returns
        pred = unet(noisy, t, encoder_hidden_states=hidden, class_labels=cond).sample
        target = noise if train_sched.config.prediction_type == "epsilon" else train_sched.get_velocity(z, noise, t)
        if snr_gamma is None:
            loss = F.mse_loss(pred, target)
        else:  # Min-SNR-gamma, as diffusers' training scripts apply it
            snr = compute_snr(train_sched, t)
            per_t = torch.minimum(snr, torch.full_like(snr, snr_gamma))
            per_t = per_t / snr if train_sched.config.prediction_type == "epsilon" else per_t / (snr + 1)
            per_t = per_t.clamp(min=snr_floor)
            loss = (F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3)) * per_t).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(ema_decay, (1 + step) / (10 + step))  # warm-up so early weights do not dominate
            for e, p in zip(ema, params, strict=True):
                e.lerp_(p.detach(), 1 - decay)
        losses.append(float(loss.detach()))
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        if callback is not None and (step + 1) % callback_every == 0 and step + 1 < steps:
            _with_weights(params, ema, functools.partial(callback, step + 1), (unet, text_encoder))
    with torch.no_grad():
        for e, p in zip(ema, params, strict=True):
            p.copy_(e)
    unet.eval()
    text_encoder.eval()
    return losses


def _with_weights(params, weights, fn, modules) -> None:
    """Run `fn()` in eval mode with `weights` copied into `params`, then restore both (no RNG is drawn)."""
    with torch.no_grad():
        saved = [p.detach().clone() for p in params]
        for w, p in zip(weights, params, strict=True):
            p.copy_(w)
        for m in modules:
            m.eval()
        try:
            fn()
        finally:
            for s, p in zip(saved, params, strict=True):
                p.copy_(s)
            for m in modules:
                m.train()


def fit_normalizer(normalizer: StableUnCLIPImageNormalizer, embeds: torch.Tensor) -> None:
    """Set the normalizer's mean/std to the training embeddings' per-dimension statistics, and freeze it."""
    with torch.no_grad():
        normalizer.mean.copy_(embeds.mean(0, keepdim=True))
        normalizer.std.copy_(embeds.std(0, keepdim=True))
    normalizer.requires_grad_(False)


def tokenize(tokenizer: CLIPTokenizer, captions: list[str]) -> torch.Tensor:
    """Decoder token ids (n, model_max_length), padded exactly as the pipeline's `encode_prompt` pads."""
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids
