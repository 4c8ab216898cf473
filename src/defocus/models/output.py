"""What every defocus network returns: a named tuple, so ``out.logit`` reads by name and unpacking still works."""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch


class DBDOutput(NamedTuple):
    """Output of a network without depth heads (``logit, features, sides = net(x)``).

    Attributes:
        logit: final logit (B, 1, H, W) at the input size, no sigmoid; 1 = in focus.
        features: raw backbone features, deepest first ``[X4, X3, X2, X1]`` (what stage 2 distils).
        sides: side logits ``[S1..S4]`` at their native resolutions (``[]`` for PDNet).
    """

    logit: torch.Tensor
    features: list
    sides: list

    @property
    def depths(self) -> Optional[list]:
        """No depth heads: always ``None`` (the same attribute as :class:`DBDDepthOutput`)."""
        return None


class DBDDepthOutput(NamedTuple):
    """Output of a network with depth heads (R-DFFNet): :class:`DBDOutput`'s three fields, then ``depths``:
    the depth maps ``[D1..D4]`` at the side resolutions, followed (with a final depth head) by ``D_final`` at the
    input size."""

    logit: torch.Tensor
    features: list
    sides: list
    depths: list


def final_logit(output) -> torch.Tensor:
    """The final in-focus logit of any network's output: a :class:`DBDOutput` / :class:`DBDDepthOutput`, another
    tuple or list whose first element is the logit, or the logit tensor itself."""
    if isinstance(output, (tuple, list)):
        return output[0]
    return output
