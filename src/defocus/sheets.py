"""Contact sheets: rows of panels (a photo, its mask, maps) scaled to one height and laid out on white."""
from __future__ import annotations

from typing import Sequence

from PIL import Image

#: White space between panels and between rows, in pixels.
GAP = 4


def panel_sheet(rows: Sequence[Sequence[Image.Image]], height: int, nearest: Sequence[int] = (),
                gap: int = GAP) -> Image.Image:
    """Lay out ``rows`` of panels: each panel scaled to ``height`` pixels (aspect kept), panels and rows ``gap``
    apart. Panels at the column indices ``nearest`` (masks) are resized without interpolation."""
    if not rows:
        raise ValueError("a contact sheet needs at least one row")
    lines = []
    for panels in rows:
        scaled = [p.convert("RGB").resize((max(1, round(p.width * height / p.height)), height),
                                          Image.NEAREST if k in nearest else Image.BILINEAR)
                  for k, p in enumerate(panels)]
        line = Image.new("RGB", (sum(p.width for p in scaled) + gap * (len(scaled) - 1), height), "white")
        x = 0
        for p in scaled:
            line.paste(p, (x, 0))
            x += p.width + gap
        lines.append(line)
    sheet = Image.new("RGB", (max(r.width for r in lines), len(lines) * (height + gap) - gap), "white")
    for i, line in enumerate(lines):
        sheet.paste(line, (0, i * (height + gap)))
    return sheet
