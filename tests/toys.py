"""Toy networks shared by the inference tests."""
from __future__ import annotations

import torch
from torch import nn


class BrightNet(nn.Module):
    """Toy network: in-focus probability = sigmoid(8 * (grey - 0.5)); bright = in focus."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(8.0))
        self.config = {"name": "bright", "backbone": None, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}

    def forward(self, x):
        return (self.gain * (x.mean(1, keepdim=True) - 0.5),)


class LeftEdgeNet(nn.Module):
    """Toy network that is not mirror-symmetric: in-focus logit = 8 x (the grey level minus its left neighbour's)."""

    def __init__(self):
        super().__init__()
        self.config = {"name": "left-edge", "backbone": None, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}

    def forward(self, x):
        grey = x.mean(1, keepdim=True)
        return (8 * (grey - torch.roll(grey, 1, dims=-1)),)
