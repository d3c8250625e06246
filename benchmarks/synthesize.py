"""Section `synthesize`: images/s of the toy unCLIP decoder batched vs one image per call (the reference
implementation generates one at a time), and the time per image of the real decoder, extrapolated.

Toy decoder: `models/toyworld/toy-unclip` through `pds.models.load_unclip` and the stage's own `pds.synthesize.generate`
(same prototypes, prompts, steps and guidance in both configurations; the two alternate within each round of
one child process, after one untimed warm-up image). Without a trained `models/toyworld/toy-unclip`, a randomly
initialised pipeline of the same architecture (`pds.toy.unclip.build_components`) is timed instead and the
result says so: the work per step does not depend on the weights.

Real decoder (stabilityai/stable-diffusion-2-1-unclip-small, fp32 CPU, 100 steps, guidance 5, 768x768): it
cannot be downloaded here, so its UNet (the SD-2.1 UNet with a 1,536-d class projection), VAE and text
encoder are built from their published configurations with random weights, and each is timed on inputs of
the real shapes: one UNet call at batch 2 (classifier-free guidance runs the conditional and unconditional
halves as one batch), one VAE decode at batch 1, one text-encoder call at batch 2 (prompt + negative prompt).
Time per image = steps x UNet call + VAE decode + text encoder. Scheduler and image-normaliser work is
ignored (vector operations, < 1%). At a latent side below 96 the UNet and VAE times are scaled up by the pixel
count: a lower bound, because self-attention grows with the square of the number of latent positions.
"""

import sys
import time

from benchmarks.common import fmt, log, run_child, stats

# stabilityai/stable-diffusion-2-1-unclip-small/unet/config.json (diffusers): the SD-2.1 (768-v) UNet with
# class_embed_type "projection" taking [noised CLIP-L/14 image embedding (768), noise-level embedding (768)].
SD21_UNCLIP_UNET = dict(
    sample_size=96, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True, upcast_attention=True,
    class_embed_type="projection", projection_class_embeddings_input_dim=1536, act_fn="silu", norm_num_groups=32,
    norm_eps=1e-5, flip_sin_to_cos=True, freq_shift=0)
# its vae/config.json: the Stable Diffusion AutoencoderKL (8x downsampling, 4 latent channels)
SD21_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
    sample_size=768, act_fn="silu")
# its text_encoder/config.json: OpenCLIP ViT-H/14's text tower (23 layers used, width 1024, 77 tokens)
SD21_TEXT = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                 num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=512)
REAL = {"num_inference_steps": 100, "guidance_scale": 5.0, "output": 768, "latent": 96}


def child_toy(spec: dict) -> dict:
    """`repeats` rounds of: the n prototypes decoded in batches of `batch` vs one per call."""
    import numpy as np
    import torch

    torch.set_num_threads(spec["threads"])
    from pds import data, models, paths, synthesize

    folder = paths.resolve(spec["unclip"])
    if (folder / "model_index.json").is_file():
        pipe, source = models.load_unclip(spec["unclip"], device="cpu"), spec["unclip"]
    else:
        from pds.toy import unclip

        torch.manual_seed(0)
        pipe = unclip.assemble(unclip.build_components(embed_dim=64))
        source = f"untrained toy architecture ({spec['unclip']} missing; speed does not depend on the weights)"
    n, bs = spec["n_images"], spec["batch"]
    d = models.unclip_embed_dim(pipe)
    norm = pipe.image_normalizer
    rng = np.random.default_rng(0)  # prototypes drawn from the decoder's own embedding statistics
    protos = (rng.standard_normal((n, d)) * norm.std.detach().numpy() + norm.mean.detach().numpy()).astype(np.float32)
    captions = [f"a red circle and a blue square, picture {i}" for i in range(n)]
    root = paths.resolve("data/raw/toyworld")
    if (root / "dataset_toyworld.json").is_file():
        captions = data.load_dataset(root)[1].caption[:n].tolist()
    side = int(pipe.unet.config.sample_size) * pipe.vae_scale_factor
    settings = synthesize.SynthesisSettings(num_inference_steps=spec["steps"], guidance_scale=5.0, image_size=side)

    def batched():
        for i in range(0, n, bs):
            synthesize.generate(pipe, protos, captions, list(range(i, min(n, i + bs))), settings)

    def single():
        for i in range(n):
            synthesize.generate(pipe, protos, captions, [i], settings)

    synthesize.generate(pipe, protos, captions, [0], settings)  # warm-up
    fns = {"batched": batched, "single": single}
    rounds = []
    for rot in range(spec["repeats"]):
        names = list(fns)[rot % 2:] + list(fns)[:rot % 2]
        r = {}
        for name in names:
            t = time.perf_counter()
            fns[name]()
            r[name] = n / (time.perf_counter() - t)
        rounds.append(r)
        print(f"    round {rot + 1}: batched {r['batched']:.1f} img/s, single {r['single']:.1f} img/s", flush=True,
              file=sys.stderr)
    return {"rounds": rounds, "decoder": source, "image_side": side, "torch_threads": torch.get_num_threads(),
            "unet_parameters": sum(p.numel() for p in pipe.unet.parameters())}


def child_real(spec: dict) -> dict:
    """Seconds of one UNet call (batch 2; `calls` times), one VAE decode (batch 1) and one text-encoder call
    (batch 2; `other_calls` times each) of the real decoder's architecture with random weights, at latent
    side `latent`."""
    import gc

    import torch

    torch.set_num_threads(spec["threads"])
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    side, calls, once = spec["latent"], spec["calls"], spec["other_calls"]
    torch.manual_seed(0)
    out = {}
    with torch.inference_mode():
        t = time.perf_counter()
        unet = UNet2DConditionModel(**SD21_UNCLIP_UNET).eval()
        out["unet_build_seconds"] = time.perf_counter() - t
        out["unet_parameters"] = sum(p.numel() for p in unet.parameters())
        x = torch.randn(2, 4, side, side)
        context = torch.randn(2, 77, 1024)  # text-encoder hidden states (prompt, negative prompt)
        class_labels = torch.randn(2, 1536)  # [noised image embedding, noise-level embedding]
        step = torch.tensor([500, 500])
        out["unet_seconds"] = []
        for _ in range(calls):
            t = time.perf_counter()
            unet(x, step, encoder_hidden_states=context, class_labels=class_labels)
            out["unet_seconds"].append(time.perf_counter() - t)
            print(f"    UNet call at {side}x{side} latents, batch 2: {out['unet_seconds'][-1]:.1f} s", flush=True,
                  file=sys.stderr)
        del unet
        gc.collect()
        vae = AutoencoderKL(**SD21_VAE).eval()
        z = torch.randn(1, 4, side, side)
        out["vae_seconds"] = []
        for _ in range(once):
            t = time.perf_counter()
            vae.decode(z)
            out["vae_seconds"].append(time.perf_counter() - t)
        del vae
        gc.collect()
        text = CLIPTextModel(CLIPTextConfig(**SD21_TEXT)).eval()
        ids = torch.randint(0, 49407, (2, 77))
        out["text_seconds"] = []
        for _ in range(once):
            t = time.perf_counter()
            text(ids)
            out["text_seconds"].append(time.perf_counter() - t)
    return out | {"torch_threads": torch.get_num_threads()}


def run(opts) -> dict:
    quick = opts.quick
    toy = {"unclip": "models/toyworld/toy-unclip", "n_images": 8 if quick else opts.synth_images,
           "batch": 8 if quick else opts.synth_batch, "steps": 5 if quick else opts.synth_steps,
           "repeats": 1 if quick else opts.repeats, "threads": opts.threads}
    r = run_child("synthesize:child_toy", toy, opts.threads)
    batched = stats([x["batched"] for x in r["rounds"]])
    single = stats([x["single"] for x in r["rounds"]])
    speedup = stats([x["batched"] / x["single"] for x in r["rounds"]])
    log(f"  toy decoder: batched {fmt(batched)} img/s, single {fmt(single)} img/s, speed-up {fmt(speedup)}")
    out = {"toy": {"settings": toy | {"guidance_scale": 5.0, "noise_level": 0, "image_side": r["image_side"]},
                   "decoder": r["decoder"], "unet_parameters": r["unet_parameters"],
                   "batched_images_per_second": batched, "single_images_per_second": single,
                   "speedup": speedup, "peak_rss_mib": r["peak_rss_mib"]}}

    latent = 16 if quick else opts.real_latent
    calls = 1 if quick else opts.repeats
    # the VAE and the text encoder run once per image (< 1% of its time): one call each is enough
    real = run_child("synthesize:child_real", {"latent": latent, "calls": calls, "other_calls": 1,
                                               "threads": opts.threads}, opts.threads)
    scale = (REAL["latent"] / latent) ** 2  # pixel count; a lower bound below 96 (attention is quadratic)
    unet, vae, text = (stats(real[k]) for k in ("unet_seconds", "vae_seconds", "text_seconds"))
    steps = REAL["num_inference_steps"]
    per_image = steps * unet["median"] * scale + vae["median"] * scale + text["median"]
    per_image_range = (steps * unet["min"] * scale + vae["min"] * scale + text["min"],
                       steps * unet["max"] * scale + vae["max"] * scale + text["max"])
    out["real"] = {
        "decoder": "stabilityai/stable-diffusion-2-1-unclip-small architecture, random weights, fp32, CPU",
        "settings": REAL | {"measured_latent": latent, "calls": calls, "unet_batch": 2},
        "unet_parameters": real["unet_parameters"], "unet_build_seconds": real["unet_build_seconds"],
        "unet_call_seconds": unet, "vae_decode_seconds": vae, "text_encoder_seconds": text,
        "scale_to_768": scale, "scaled": latent != REAL["latent"],
        "seconds_per_image": per_image, "seconds_per_image_range": per_image_range,
        "hours_per_100_images": per_image * 100 / 3600,
        "peak_rss_mib": real["peak_rss_mib"],
        "assumptions": (f"{steps} steps x one UNet call at batch 2 (guidance 5 batches the conditional and "
                        "unconditional inputs) + one VAE decode + one text-encoder call; fp32 on this CPU; "
                        "scheduler/normaliser work ignored"
                        + ("" if latent == REAL["latent"] else
                           f"; measured at {latent}x{latent} latents and scaled x{scale:.0f} by pixel count: "
                           "a LOWER BOUND (self-attention is quadratic in positions)")),
    }
    log(f"  real decoder: UNet call {fmt(unet)} s at {latent}x{latent} latents -> {per_image / 60:.1f} min per image"
        + (" (scaled, lower bound)" if latent != REAL["latent"] else ""))
    return out


def markdown(section: dict) -> str:
    toy, real = section["toy"], section["real"]
    s, rs = toy["settings"], real["settings"]
    steps, scale = rs["num_inference_steps"], real["scale_to_768"]
    lo, hi = real["seconds_per_image_range"]
    lines = [f"**Synthesis** (toy decoder: {toy['decoder']}; {s['n_images']} images of {s['image_side']}x"
             f"{s['image_side']}, {s['steps']} steps, guidance {s['guidance_scale']})", "",
             "| toy decoder | images/s | batched / one per call |", "|---|---|---|",
             f"| batch {s['batch']} | {fmt(toy['batched_images_per_second'])} | {fmt(toy['speedup'])} |",
             f"| one image per call (as the reference) | {fmt(toy['single_images_per_second'])} | 1 |", "",
             f"Real decoder ({real['decoder']}; {steps} steps, {rs['output']}x{rs['output']}), extrapolated per image "
             f"from timed components{'' if not real['scaled'] else ' scaled by pixel count (LOWER BOUND)'}:", "",
             "| component | seconds per call | calls per image | seconds per image |", "|---|---|---|---|",
             f"| UNet, batch 2 (guidance), {rs['measured_latent']}² latents | {fmt(real['unet_call_seconds'])} | "
             f"{steps} | {steps * real['unet_call_seconds']['median'] * scale:,.0f} |",
             f"| VAE decode | {fmt(real['vae_decode_seconds'])} | 1 | "
             f"{real['vae_decode_seconds']['median'] * scale:,.1f} |",
             f"| text encoder, batch 2 | {fmt(real['text_encoder_seconds'])} | 1 | "
             f"{real['text_encoder_seconds']['median']:,.1f} |",
             f"| **per image** | | | **{real['seconds_per_image']:,.0f} s ≈ {real['seconds_per_image'] / 60:.0f} min**"
             + (f" ({lo / 60:.0f}–{hi / 60:.0f})" if hi > lo else "") + " |", "",
             f"≈ {real['hours_per_100_images']:.1f} h for M = 100 images on this CPU. Assumptions: "
             f"{real['assumptions']}. Peak memory of that child: {real['peak_rss_mib'] / 1024:.1f} GiB."]
    return "\n".join(lines) + "\n"
