"""A tiny random StableUnCLIPImg2ImgPipeline built in memory (the diffusers fast-test recipe), shared by
test_models.py and test_synthesize.py."""

import torch

from pds.toy import unclip


def tiny_unclip(embed_dim: int = 8, image_size: int = 16):
    """Random weights (seeded), 8x8 latents, captions up to 16 tokens; decodes in a fraction of a second."""
    torch.manual_seed(0)
    comps = unclip.build_components(embed_dim, image_size=image_size, text_hidden=32, text_layers=1, max_length=16,
                                    vae_channels=(8, 16), unet_channels=(16, 32), attention_heads=2)
    return unclip.assemble(comps)
