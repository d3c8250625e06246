"""Small student image encoders for the toy world (notebook 05_evaluate): ConvNet-3, a ResNet and a ViT.

Three architecture families at the toy resolution (32x32), playing the roles that NFNet, NF-ResNet50 and
ViT-Tiny play on Flickr30k / COCO. Each maps (B, 3, H, W) images to (B, d) features (no class head).
Defaults are small on purpose: 3 encoders x 5 methods x 3 seeds must train in minutes on 2 CPU cores.
"""

import torch
from torch import nn

STUDENTS = ("convnet", "resnet", "vit")
# the toy architectures (the defaults below); saved into each pretrained encoder's config.json
ARCHS = {"convnet": {"width": 32, "depth": 3}, "resnet": {"widths": [16, 32, 64], "stem_stride": 2},
         "vit": {"patch_size": 4, "dim": 64, "depth": 4, "heads": 2, "mlp_ratio": 2.0}}


class ConvNet(nn.Module):
    """The dataset-distillation ConvNet-3 (Zhao et al.; Cazenavette et al.): [conv3x3 - instance norm -
    ReLU - avgpool2] x depth, features = the flattened last map (width * (H / 2**depth)**2). The literature
    uses width 128; the toy default is 32 (about 10x cheaper on a CPU)."""

    def __init__(self, width: int = 32, depth: int = 3, image_size: int = 32, in_channels: int = 3):
        super().__init__()
        layers, c = [], in_channels
        for _ in range(depth):
            # GroupNorm with one group per channel is the DD literature's "instancenorm" (affine)
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.GroupNorm(width, width, affine=True),
                       nn.ReLU(inplace=True), nn.AvgPool2d(2, 2)]
            c = width
        self.features = nn.Sequential(*layers)
        self.num_features = width * (image_size // 2**depth) ** 2

    def forward(self, x):  # (B, 3, H, W) -> (B, width * (H/8)^2)
        return self.features(x).flatten(1)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """A ResNet-8: a 3x3 stem of stride `stem_stride` (2: halves the input first, as ImageNet ResNets'
    stride-4 stem does at 224 px, and costs a third of a CIFAR ResNet), one basic block per stage (widths
    `widths`, stride 2 from the second stage on), global average pooling -> (B, widths[-1])."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), stem_stride: int = 2, in_channels: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, stem_stride, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        blocks, c = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(BasicBlock(c, w, 1 if i == 0 else 2))
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.num_features = c

    def forward(self, x):  # (B, 3, H, W) -> (B, widths[-1])
        return self.blocks(self.stem(x)).mean(dim=(2, 3))


class ViT(nn.Module):
    """A small ViT (patch 4 on 32x32 -> 64 tokens + CLS, pre-norm blocks); features = the final CLS token
    after LayerNorm, as timm's ViT-Tiny with num_classes=0."""

    def __init__(self, image_size: int = 32, patch_size: int = 4, dim: int = 64, depth: int = 4,
                 heads: int = 2, mlp_ratio: float = 2.0, in_channels: int = 3):
        super().__init__()
        n_tokens = (image_size // patch_size) ** 2
        self.patch = nn.Conv2d(in_channels, dim, patch_size, patch_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, n_tokens + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, int(dim * mlp_ratio), dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.num_features = dim

    def forward(self, x):  # (B, 3, H, W) -> (B, dim)
        tokens = self.patch(x).flatten(2).transpose(1, 2)  # (B, n_tokens, dim)
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1) + self.pos
        return self.norm(self.blocks(tokens)[:, 0])


def build_student(name: str, image_size: int = 32, **kwargs) -> nn.Module:
    """A randomly initialised toy student encoder by name (`convnet`, `resnet`, `vit`); `kwargs` override
    the architecture defaults (ARCHS), e.g. width=128."""
    if name == "convnet":
        return ConvNet(image_size=image_size, **kwargs)
    if name == "resnet":
        return ResNet(**kwargs)
    if name == "vit":
        return ViT(image_size=image_size, **kwargs)
    raise ValueError(f"unknown toy student {name!r}; choose one of {', '.join(STUDENTS)}.")
