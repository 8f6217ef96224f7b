"""Compact 2D U-Net for lesion segmentation in breast ultrasound (plain torch, no torchvision).

The architecture is deliberately small (about 1.9 M parameters at ``base_channels=16``) so that
CPU inference of one letterboxed 192 x 192 image takes well under 0.1 s on two cores and the
weights file stays far below 10 MB.

Example
-------
>>> from HER2RadiomicsLib.segmentation.networks import build_network  # doctest: +SKIP
>>> net = build_network({"name": "unet2d", "base_channels": 16, "depth": 4})  # doctest: +SKIP
"""
from __future__ import annotations

ARCHITECTURE_NAME = "unet2d"
ARCHITECTURE_VERSION = 1


def _torch():
    # torch is imported lazily so that the rest of the library works without it.
    import torch
    return torch


def build_network(arch: dict):
    """Instantiate the network described by an architecture dictionary.

    Parameters
    ----------
    arch : dict
        ``{"name": "unet2d", "version": 1, "base_channels": int, "depth": int}``.

    Returns
    -------
    torch.nn.Module
        A network mapping ``(N, 1, H, W)`` normalised grey images to ``(N, 1, H, W)`` logits;
        ``H`` and ``W`` must be divisible by ``2 ** depth``.

    Raises
    ------
    ValueError
        If the name or version is not one this library can build.
    """
    name = arch.get("name")
    version = int(arch.get("version", ARCHITECTURE_VERSION))
    if name != ARCHITECTURE_NAME or version != ARCHITECTURE_VERSION:
        raise ValueError(
            f"unsupported network architecture {name!r} v{version}; this library builds "
            f"{ARCHITECTURE_NAME!r} v{ARCHITECTURE_VERSION}")
    return _make_unet(int(arch.get("base_channels", 16)), int(arch.get("depth", 4)))


def _make_unet(base_channels: int, depth: int):
    torch = _torch()
    nn = torch.nn

    class ConvBlock(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True))

        def forward(self, x):
            return self.body(x)

    class UNet2D(nn.Module):
        def __init__(self):
            super().__init__()
            chans = [base_channels * 2 ** i for i in range(depth + 1)]
            self.depth = depth
            self.enc = nn.ModuleList([ConvBlock(1, chans[0])] + [
                ConvBlock(chans[i], chans[i + 1]) for i in range(depth)])
            self.pool = nn.MaxPool2d(2)
            self.up = nn.ModuleList([
                nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in range(depth)])
            self.dec = nn.ModuleList([ConvBlock(2 * chans[i], chans[i]) for i in range(depth)])
            self.head = nn.Conv2d(chans[0], 1, 1)

        def forward(self, x):
            skips = []
            for i, block in enumerate(self.enc):
                x = block(x if i == 0 else self.pool(x))
                skips.append(x)
            x = skips.pop()
            for i in reversed(range(self.depth)):
                x = self.up[i](x)
                x = self.dec[i](torch.cat([x, skips[i]], dim=1))
            return self.head(x)

    return UNet2D()
