"""A small U-Net for CPU-sized images, after DDPM's (Ho et al.) network: a sinusoidal time
embedding fed to every residual block, GroupNorm + SiLU, two or three resolutions joined by skip
connections, one self-attention block at the lowest resolution (a few dozen tokens: cheap).
It predicts v (or eps) from (x_t, t); explorer/learned/image_models.py turns that into the denoiser."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def timestep_embedding(t, dim: int, max_period: float = 10000.0):
    """DDPM's sinusoidal embedding of (continuous) t: [cos(t w_k), sin(t w_k)], w_k = max_period^(-k/(dim/2))."""
    half = dim // 2
    w = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    arg = t.to(torch.float32)[:, None] * w[None, :]
    return torch.cat([torch.cos(arg), torch.sin(arg)], dim=1)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, add the projected time embedding, GroupNorm-SiLU-conv, residual (1x1 conv if channels change)."""

    def __init__(self, c_in: int, c_out: int, t_dim: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(t_dim, c_out)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(temb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Single-head self-attention over the pixels of a feature map, residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(2, 3).unbind(1)
        a = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(a.transpose(1, 2).reshape(b, c, h, w))


class UNet(nn.Module):
    """net(x_t, t) -> prediction of x's shape. channels: width per resolution (halving the
    spatial size between them); blocks: residual blocks per resolution; attention: at the lowest;
    patch: the stem embeds patch x patch pixels (stride patch) and the head un-shuffles them back,
    as in DiT's patchify (patch 2 makes the network 4x cheaper at full resolution)."""

    def __init__(self, in_channels: int = 1, channels=(32, 64), blocks: int = 1, attention: bool = True,
                 patch: int = 1):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if not channels or blocks < 1:
            raise ValueError(f"channels must be non-empty and blocks >= 1, got {channels}, {blocks}")
        if patch < 1:
            raise ValueError(f"patch must be >= 1, got {patch}")
        self.config = {"in_channels": int(in_channels), "channels": list(channels), "blocks": int(blocks),
                       "attention": bool(attention), "patch": int(patch)}
        c0, t_dim = channels[0], 4 * channels[0]
        self.t_dim0 = c0
        self.time = nn.Sequential(nn.Linear(c0, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.inp = (nn.Conv2d(in_channels, c0, 3, padding=1) if patch == 1
                    else nn.Conv2d(in_channels, c0, patch, stride=patch))
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips, c = [c0], c0
        for i, ch in enumerate(channels):
            level = nn.ModuleList()
            for _ in range(blocks):
                level.append(ResBlock(c, ch, t_dim))
                c = ch
                skips.append(c)
            self.down.append(level)
            if i < len(channels) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid1 = ResBlock(c, c, t_dim)
        self.attn = Attention(c) if attention else nn.Identity()
        self.mid2 = ResBlock(c, c, t_dim)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, ch in reversed(list(enumerate(channels))):
            level = nn.ModuleList()
            for _ in range(blocks + 1):
                level.append(ResBlock(c + skips.pop(), ch, t_dim))
                c = ch
            self.up.append(level)
            if i > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        self.out = nn.Sequential(_norm(c), nn.SiLU(), nn.Conv2d(c, in_channels * patch * patch, 3, padding=1),
                                 nn.PixelShuffle(patch))
        nn.init.zeros_(self.out[2].weight)
        nn.init.zeros_(self.out[2].bias)

    def forward(self, x, t):
        temb = self.time(timestep_embedding(t, self.t_dim0))
        h = self.inp(x)
        hs = [h]
        for i, level in enumerate(self.down):
            for block in level:
                h = block(h, temb)
                hs.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                hs.append(h)
        h = self.mid2(self.attn(self.mid1(h, temb)), temb)
        for i, level in enumerate(self.up):
            for block in level:
                h = block(torch.cat([h, hs.pop()], dim=1), temb)
            if i < len(self.upsample):
                skip_shape = hs[-1].shape[-2:]
                h = self.upsample[i](F.interpolate(h, size=skip_shape, mode="nearest"))
        return self.out(h)


def n_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
