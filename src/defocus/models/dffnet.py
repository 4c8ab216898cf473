"""DFFNet decoders (method.md §1.3-1.5, §1.9): the dense feature fusing module, side logits, spatial attention,
the aggregation pathway, and the simplified PDNet decoder."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import RFB, ConvBN, up2
from .output import DBDDepthOutput, DBDOutput
from .padding import pad_to_multiple


class _Aggregation(nn.Module):
    """The "bottom-top" aggregation shared by DFFNet and PDNet (method.md §1.5): concatenations growing
    32 -> 64 -> 96 -> 128 channels from 1/16 to 1/4 resolution, then CB128 and the 1x1 head."""

    def _build_aggregation(self, ch: int) -> None:
        self.top = ConvBN(ch, ch)
        self.g2_up = ConvBN(2 * ch, 2 * ch)
        self.g3_up = ConvBN(3 * ch, 3 * ch)
        self.g2_fuse = ConvBN(2 * ch, 2 * ch)
        self.g3_fuse = ConvBN(3 * ch, 3 * ch)
        self.g4_fuse = ConvBN(4 * ch, 4 * ch)
        self.head_conv = ConvBN(4 * ch, 4 * ch)
        self.head = nn.Conv2d(4 * ch, 1, 1)

    def _aggregate(self, top, l2, l3, l4) -> torch.Tensor:
        """G2 = CB64[l2, top]; G3 = CB96[l3, CB64(U2 G2)]; G4 = CB128[l4, CB96(U2 G3)]; returns CB128(G4)."""
        g2 = self.g2_fuse(torch.cat([l2, top], 1))
        g3 = self.g3_fuse(torch.cat([l3, self.g2_up(up2(g2))], 1))
        g4 = self.g4_fuse(torch.cat([l4, self.g3_up(up2(g3))], 1))
        return self.head_conv(g4)


class DFFNetDecoder(_Aggregation):
    """Decoder of DFFNet and its ablations, taking the four RFB outputs R1..R4 (32 channels each).

    Flags select the paper's variants:
      * ``dffm=False``        -> "DFFNet w/o DFFM": T_k = R_k, S1 on R4 at 1/32, top branch upsampled after attention.
      * ``attention=False``   -> "DFFNet w/o spatial attention" (also the VGG16 variant's decoder).
      * ``depth_heads=True``  -> R-DFFNet: four 1x1 depth heads on T1..T4 (before attention).
      * ``final_depth_head``  -> R-DFFNet's final depth head (paper App. B; absent from the reference code): a 1x1
        conv (128 -> 1) on CB128(G4), returned at the resolution of R1 (``DBDNet`` upsamples it like the logit).
    """

    def __init__(self, ch: int = 32, dffm: bool = True, attention: bool = True, depth_heads: bool = False,
                 final_depth_head: bool = False):
        super().__init__()
        self.dffm, self.attention, self.depth_heads = dffm, attention, depth_heads
        if dffm:
            # DFFM (method.md §1.3); the two "shared" convolutions are r4_up2 (CB_c) and r3_up (CB_d).
            # Without DFFM they would be unused, so they are not built.
            self.r4_to_t2 = ConvBN(ch, ch)    # CB_b
            self.r4_up2 = ConvBN(ch, ch)      # CB_c, shared by T3 and T4
            self.r3_up = ConvBN(ch, ch)       # CB_d, shared by T3 and T4
            self.r2_up = ConvBN(ch, ch)       # CB_e
        self._build_aggregation(ch)           # its `top` is CB_a: T1 (without DFFM: the post-attention top branch)
        self.sides = nn.ModuleList(nn.Conv2d(ch, 1, 1) for _ in range(4))
        if attention:
            self.attention_convs = nn.ModuleList(nn.Conv2d(1, ch, 3, padding=1, bias=False) for _ in range(4))
        if depth_heads:
            self.depth_sides = nn.ModuleList(nn.Conv2d(ch, 1, 1) for _ in range(4))
        self.depth_head = nn.Conv2d(4 * ch, 1, 1) if final_depth_head else None

    def _attend(self, k: int, t: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
        if not self.attention:
            return t
        return t * torch.sigmoid(self.attention_convs[k](side))

    def forward(self, r1, r2, r3, r4):
        """Return (P at the resolution of R1, [S1..S4], depth logits [D1..D4(, D_final)] or None)."""
        if self.dffm:
            t1 = self.top(up2(r4))
            t2 = self.r4_to_t2(up2(r4)) * r3
            t3 = self.r4_up2(up2(r4, 2)) * self.r3_up(up2(r3)) * r2
            t4 = self.r4_up2(up2(r4, 3)) * self.r3_up(up2(r3, 2)) * self.r2_up(up2(r2)) * r1
        else:
            t1, t2, t3, t4 = r4, r3, r2, r1
        ts = [t1, t2, t3, t4]
        sides = [self.sides[k](t) for k, t in enumerate(ts)]
        depths = [self.depth_sides[k](t) for k, t in enumerate(ts)] if self.depth_heads else None
        a1, a2, a3, a4 = (self._attend(k, t, s) for k, (t, s) in enumerate(zip(ts, sides)))
        if not self.dffm:
            a1 = self.top(up2(a1))
        h = self._aggregate(a1, a2, a3, a4)
        if self.depth_head is not None:
            depths = (depths or []) + [self.depth_head(h)]
        return self.head(h), sides, depths


class PDNetDecoder(_Aggregation):
    """PDNet's simplified decoder (method.md §1.9): 1x1 reductions (with bias) of the raw backbone features, then
    the same 32 -> 64 -> 96 -> 128 aggregation; no RFB, DFFM, sides or attention."""

    def __init__(self, in_channels, ch: int = 32):
        super().__init__()
        self.reduce = nn.ModuleList(nn.Conv2d(c, ch, 1) for c in in_channels)  # shallow -> deep
        self._build_aggregation(ch)

    def forward(self, x1, x2, x3, x4):
        """Return (P at the resolution of X1, [], None)."""
        g1, g2_, g3_, g4_ = (conv(x) for conv, x in zip(self.reduce, (x1, x2, x3, x4)))
        return self.head(self._aggregate(self.top(up2(g4_)), g3_, g2_, g1)), [], None


class DBDNet(nn.Module):
    """A defocus-blur detector: backbone -> (RFBs) -> decoder -> logit at input resolution.

    ``forward(x)`` returns a :class:`~defocus.models.output.DBDOutput` ``(logit, features, sides)`` as the
    reference does: the final logit (B,1,H,W, no sigmoid; 1 = in focus), the raw backbone features deepest first
    ``[X4, X3, X2, X1]`` (what stage 2 distils), and the side logits ``[S1..S4]`` at their native resolutions
    (PDNet has no sides: ``[]``). Models with depth heads return a
    :class:`~defocus.models.output.DBDDepthOutput` with a fourth field, the depth maps ``[D1..D4]`` at the side
    resolutions, followed (R-DFFNet's final depth head) by ``D_final`` upsampled to the input size like the logit.
    ``forward`` = :meth:`forward_features` + :meth:`forward_head`.

    Inputs whose sides are not multiples of the backbone's total stride are padded (replicate, bottom/right) to
    the next multiple; the final logit (and ``D_final``) is cropped back to the input size, features and sides
    refer to the padded image.
    """

    def __init__(self, backbone: nn.Module, decoder: nn.Module, use_rfb: bool, config: dict):
        super().__init__()
        self.backbone = backbone
        self.rfbs = nn.ModuleList(RFB(c, 32) for c in backbone.channels) if use_rfb else None
        self.decoder = decoder
        self.config = dict(config)

    @property
    def stride(self) -> int:
        """Total stride of the deepest feature level (inputs are padded to a multiple of it)."""
        return int(self.backbone.reductions[-1])

    def forward_features(self, x: torch.Tensor) -> list:
        """Raw backbone features of ``x`` padded to the stride, shallow -> deep ``[X1, X2, X3, X4]``."""
        return self.backbone(pad_to_multiple(x, self.stride))

    def forward_head(self, feats: list, size: tuple[int, int]):
        """The outputs for backbone features ``feats`` (shallow -> deep) of an input of ``size`` = (H, W)."""
        h, w = size
        levels = [rfb(f) for rfb, f in zip(self.rfbs, feats)] if self.rfbs is not None else feats
        p, sides, depths = self.decoder(*levels)
        logit = self._to_input(p, h, w)
        if depths is None:
            return DBDOutput(logit, feats[::-1], sides)
        if getattr(self.decoder, "depth_head", None) is not None:
            depths = depths[:-1] + [self._to_input(depths[-1], h, w)]
        return DBDDepthOutput(logit, feats[::-1], sides, depths)

    def forward(self, x: torch.Tensor):
        """Run the network on a normalised batch (B, 3, H, W); see the class docstring for the output."""
        return self.forward_head(self.forward_features(x), x.shape[-2:])

    def _to_input(self, p: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Upsample a map at the first level's resolution to the (padded) input size, then crop to ``h`` x ``w``."""
        s = int(self.backbone.reductions[0])
        return F.interpolate(p, scale_factor=s, mode="bilinear", align_corners=True)[..., :h, :w]
