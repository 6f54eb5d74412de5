"""CARD visual semantic unit: each item drawn as one picture, then encoded by a vision backbone.

The unit puts the item's own picture (when it has one) on top, its title, brand and category path
as wrapped text below, and a "collaborative context" strip at the bottom with the top-k items most
similar by a collaborative embedding (thumbnail or placeholder + short title). One image therefore
carries visual, textual and collaborative signal for a single encoder pass.

Default backbone: the offline EfficientNet-Lite0. The paper uses SigLIP2 so400m: pass
`backend="google/siglip2-so400m-patch16-512"` (or a local copy) to use pooled SigLIP2 features (1152-d).
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from sidrec.features.base import DEFAULT_CACHE_DIR, Fingerprint, column_text
from sidrec.features.embeddings import ItemEmbeddings
from sidrec.features.image import (
    EFFICIENTNET_LITE0,
    VisionEncoder,
    _source_signature,
    embed_images,
    load_image,
)
from sidrec.io import atomic_path

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"))
ELLIPSIS = "…"


@functools.lru_cache(maxsize=None)
def find_font(bold: bool = False) -> Path:
    """DejaVu Sans (Debian fonts-dejavu-core, else the copy bundled with matplotlib)."""
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    candidates = [d / name for d in FONT_DIRS]
    try:
        import matplotlib

        candidates.append(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name)
    except ImportError:
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"no TrueType font {name} found (looked in {[str(c) for c in candidates]}); "
        "install fonts-dejavu-core or matplotlib"
    )


@functools.lru_cache(maxsize=64)
def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(find_font(bold)), size)


@dataclass(frozen=True)
class CardLayout:
    """Geometry of a unit. Heights are fractions of `size`; font sizes are in pixels at size 512."""

    size: int = 512
    image_ratio: float = 0.45
    strip_ratio: float = 0.27
    k: int = 3
    margin: int = 14
    title_font: int = 24
    body_font: int = 18
    neighbour_font: int = 13
    no_image_scale: float = 1.3
    background: str = "#ffffff"
    strip_background: str = "#eef1f5"
    placeholder: str = "#c9d1dc"

    def __post_init__(self) -> None:
        if self.size < 128:
            raise ValueError(f"CardLayout.size must be >= 128 pixels, got {self.size}")
        if not 0.0 < self.image_ratio + self.strip_ratio < 0.9 or min(self.image_ratio, self.strip_ratio) <= 0:
            raise ValueError(
                f"CardLayout image_ratio ({self.image_ratio}) and strip_ratio ({self.strip_ratio}) must be > 0 "
                "and leave room for text (sum < 0.9)"
            )
        if self.k < 0:
            raise ValueError(f"CardLayout.k must be >= 0, got {self.k}")

    def px(self, value: float) -> int:
        """Scale a size given for a 512-pixel unit to this unit's size."""
        return max(1, round(value * self.size / 512))


def nearest_neighbours(emb: torch.Tensor | ItemEmbeddings, k: int = 3, chunk_size: int = 4096) -> torch.LongTensor:
    """Top-k cosine neighbours of every row, self excluded: LongTensor `[n, k]`, -1 where n - 1 < k."""
    x = emb.vectors if isinstance(emb, ItemEmbeddings) else emb
    x = F.normalize(x.detach().float(), dim=1)
    n = x.shape[0]
    out = torch.full((n, k), -1, dtype=torch.long)
    kk = min(k, n - 1)
    if kk <= 0:
        return out
    for start in range(0, n, chunk_size):
        end = min(start + chunk_size, n)
        sims = x[start:end] @ x.T
        rows = torch.arange(end - start)
        sims[rows, rows + start] = float("-inf")
        out[start:end, :kk] = sims.topk(kk, dim=1).indices
    return out


def _fit_prefix(word: str, font: ImageFont.FreeTypeFont, width: float) -> int:
    lo, hi = 1, len(word)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if font.getlength(word[:mid]) <= width else (lo, mid - 1)
    return lo


def wrap_text(text: str, font: ImageFont.FreeTypeFont, width: float, max_lines: int) -> list[str]:
    """Greedy word wrap to `width` pixels; over-long words are split; the last kept line is ellipsised."""
    if max_lines <= 0 or not text:
        return []
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if font.getlength(candidate) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        while font.getlength(word) > width:
            cut = _fit_prefix(word, font, width)
            lines.append(word[:cut])
            word = word[cut:]
        current = word
        if len(lines) > max_lines:
            break
    if current:
        lines.append(current)
    if len(lines) <= max_lines:
        return lines
    last = lines[max_lines - 1]
    while last and font.getlength(last + ELLIPSIS) > width:
        last = last[:-1]
    return lines[: max_lines - 1] + [last.rstrip() + ELLIPSIS]


def _category_path(items: pd.DataFrame) -> pd.Series:
    return column_text(items, "categories").str.replace(r"\s*(?:>|,|\|)\s*", " › ", regex=True)


def _paste_contain(canvas: Image.Image, img: Image.Image, box: tuple[int, int, int, int]) -> None:
    """Scale `img` to fit inside `box` keeping its aspect ratio and paste it centred."""
    x0, y0, x1, y1 = box
    scale = min((x1 - x0) / img.width, (y1 - y0) / img.height)
    w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    canvas.paste(img.resize((w, h), Image.BICUBIC), (x0 + (x1 - x0 - w) // 2, y0 + (y1 - y0 - h) // 2))


class UnitRenderer:
    """Draws units for one catalogue; text columns are prepared once, neighbour thumbnails memoised."""

    def __init__(self, items: pd.DataFrame, layout: CardLayout, image_column: str = "image") -> None:
        self.layout = layout
        self.titles = column_text(items, "title").tolist()
        self.brands = column_text(items, "brand").tolist()
        self.categories = _category_path(items).tolist()
        self.descriptions = column_text(items, "description").str.slice(0, 600).tolist()
        self.images = column_text(items, image_column).tolist()
        self.thumbnail = functools.lru_cache(maxsize=4096)(self._thumbnail)

    def _thumbnail(self, idx: int) -> Image.Image | None:
        img = load_image(self.images[idx])
        if img is not None:
            img.thumbnail((self.layout.size // 3,) * 2)
        return img

    def _text_block(self, draw: ImageDraw.ImageDraw, top: int, bottom: int, idx: int, scale: float) -> None:
        lay = self.layout
        width = lay.size - 2 * lay.margin
        title_font = _font(lay.px(lay.title_font * scale), bold=True)
        body_font = _font(lay.px(lay.body_font * scale))
        blocks = [
            (self.titles[idx] or "(untitled item)", title_font, "#111111", 4 if scale > 1 else 3),
            (f"Brand: {self.brands[idx]}" if self.brands[idx] else "", body_font, "#1f3a60", 1),
            (self.categories[idx], body_font, "#555555", 2),
            (self.descriptions[idx], _font(lay.px(lay.body_font * 0.85 * scale)), "#777777", 99),
        ]
        y = top
        for text, font, fill, max_lines in blocks:
            line_h = round(font.size * 1.22)
            room = (bottom - y) // line_h
            for line in wrap_text(text, font, width, min(max_lines, room)):
                draw.text((lay.margin, y), line, font=font, fill=fill)
                y += line_h
            if text and room > 0:
                y += lay.px(6)

    def _strip(self, canvas: Image.Image, draw: ImageDraw.ImageDraw, top: int, neighbours: Sequence[int]) -> None:
        lay = self.layout
        draw.rectangle((0, top, lay.size, lay.size), fill=lay.strip_background)
        label_font = _font(lay.px(lay.neighbour_font), bold=True)
        draw.text((lay.margin, top + lay.px(4)), "Collaborative context", font=label_font, fill="#333333")
        cell_w = (lay.size - lay.margin * (lay.k + 1)) // lay.k
        body_top = top + lay.px(4) + round(label_font.size * 1.4)
        font = _font(lay.px(lay.neighbour_font))
        line_h = round(font.size * 1.2)
        thumb = min(cell_w, lay.size - body_top - 2 * line_h - lay.px(8))
        for slot, nb in enumerate(neighbours):
            x0 = lay.margin + slot * (cell_w + lay.margin)
            box = (x0 + (cell_w - thumb) // 2, body_top, x0 + (cell_w + thumb) // 2, body_top + thumb)
            img = self.thumbnail(nb)
            if img is not None:
                _paste_contain(canvas, img, box)
            else:
                draw.rounded_rectangle(box, radius=lay.px(8), fill=lay.placeholder)
                initials = "".join(w[0] for w in self.titles[nb].split()[:2]).upper() or "?"
                draw.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), initials,
                          font=_font(max(8, thumb // 3), bold=True), fill="#ffffff", anchor="mm")
            for i, line in enumerate(wrap_text(self.titles[nb], font, cell_w, 2)):
                draw.text((x0, box[3] + lay.px(3) + i * line_h), line, font=font, fill="#222222")

    def render(self, idx: int, neighbours: Sequence[int] = ()) -> Image.Image:
        lay = self.layout
        canvas = Image.new("RGB", (lay.size, lay.size), lay.background)
        draw = ImageDraw.Draw(canvas)
        neighbours = [int(n) for n in neighbours[: lay.k] if 0 <= int(n) != idx]
        text_bottom = lay.size - round(lay.strip_ratio * lay.size) if neighbours else lay.size - lay.margin
        picture = load_image(self.images[idx])
        if picture is not None:
            pic_bottom = round(lay.image_ratio * lay.size)
            _paste_contain(canvas, picture, (lay.margin, lay.margin, lay.size - lay.margin, pic_bottom))
            self._text_block(draw, pic_bottom + lay.px(8), text_bottom, idx, scale=1.0)
        else:
            self._text_block(draw, lay.margin, text_bottom, idx, scale=lay.no_image_scale)
        if neighbours:
            self._strip(canvas, draw, text_bottom, neighbours)
        return canvas


def render_units(
    items: pd.DataFrame,
    neighbours: torch.Tensor | None = None,
    *,
    rows: Sequence[int] | None = None,
    layout: CardLayout | None = None,
    image_column: str = "image",
    **layout_options: Any,
) -> Iterator[Image.Image]:
    """Yield the unit of each item in `rows` (default all); `neighbours[i]` lists item i's context items
    (LongTensor `[n, k]`, entries < 0 ignored; None = no context strip)."""
    layout = replace(layout or CardLayout(), **layout_options)
    if neighbours is not None:
        neighbours = torch.as_tensor(neighbours, dtype=torch.long)
        if neighbours.ndim != 2 or neighbours.shape[0] != len(items):
            raise ValueError(f"neighbours must be [n_items={len(items)}, k], got {tuple(neighbours.shape)}")
        if neighbours.numel() and int(neighbours.max()) >= len(items):
            raise ValueError(f"neighbours reference item {int(neighbours.max())} >= n_items={len(items)}")
    renderer = UnitRenderer(items, layout, image_column)
    nb_lists = neighbours.tolist() if neighbours is not None else None
    for idx in rows if rows is not None else range(len(items)):
        yield renderer.render(idx, nb_lists[idx] if nb_lists is not None else ())


def write_units(
    items: pd.DataFrame,
    out_dir: str | os.PathLike,
    neighbours: torch.Tensor | None = None,
    *,
    rows: Sequence[int] | None = None,
    **layout_options: Any,
) -> list[Path]:
    """Write the units of `rows` (default all) as `<row>_<item_id>.png` under `out_dir`, for inspection."""
    rows = list(rows if rows is not None else range(len(items)))
    if rows and not 0 <= min(rows) <= max(rows) < len(items):
        raise IndexError(f"rows must lie in [0, {len(items)}), got {min(rows)}..{max(rows)}")
    ids = column_text(items, "item_id").tolist()
    paths = []
    for row, unit in zip(rows, render_units(items, neighbours, rows=rows, **layout_options)):
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", ids[row])[:60]
        path = Path(out_dir) / f"{row:06d}_{safe}.png" if safe else Path(out_dir) / f"{row:06d}.png"
        with atomic_path(path) as tmp:
            unit.save(tmp, format="PNG")
        paths.append(path)
    return paths


def resolve_neighbours(n_items: int, k: int, neighbours: Any = None, collaborative: Any = None) -> torch.Tensor | None:
    """Neighbour indices from `neighbours` as given, or computed from a `collaborative` embedding."""
    if neighbours is not None:
        return torch.as_tensor(neighbours, dtype=torch.long)
    if collaborative is not None:
        x = collaborative.vectors if isinstance(collaborative, ItemEmbeddings) else torch.as_tensor(collaborative)
        if x.shape[0] != n_items:
            raise ValueError(f"collaborative embedding has {x.shape[0]} rows for {n_items} items")
        return nearest_neighbours(x, k)
    return None


def card_fingerprint(fp: Fingerprint, items: pd.DataFrame, neighbours: Any, layout_options: dict,
                     image_column: str = "image") -> Fingerprint:
    """Everything that changes a rendered unit: layout, text fields, pictures, neighbours."""
    fp.add(asdict(replace(CardLayout(), **layout_options)))
    for col in ("title", "brand", "categories", "description"):
        fp.add(column_text(items, col))
    fp.add(_source_signature(column_text(items, image_column)))
    return fp.add(torch.as_tensor(neighbours) if neighbours is not None else None)


class CardEncoder(VisionEncoder):
    """Render every item's unit and take pooled image features; ctx: `neighbours` or `collaborative`."""

    name = "card"

    def __init__(
        self,
        backend: str = EFFICIENTNET_LITE0,
        *,
        image_column: str = "image",
        batch_size: int = 16,
        normalize: bool = True,
        device: str | None = None,
        cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR,
        **layout_options: Any,
    ) -> None:
        super().__init__(backend, image_column, batch_size, normalize, device, cache_dir)
        self.layout = replace(CardLayout(), **layout_options)
        self.layout_options = layout_options

    def fingerprint(self, items: pd.DataFrame, neighbours: Any = None, collaborative: Any = None, **ctx: Any) -> Fingerprint:
        nb = resolve_neighbours(len(items), self.layout.k, neighbours, collaborative)
        fp = Fingerprint().add({"backend": self._backend_id(), "normalize": self.normalize})
        return card_fingerprint(fp, items, nb, self.layout_options, self.image_column)

    def _encode(self, items: pd.DataFrame, neighbours: Any = None, collaborative: Any = None, **ctx: Any) -> ItemEmbeddings:
        nb = resolve_neighbours(len(items), self.layout.k, neighbours, collaborative)
        units = render_units(items, nb, layout=self.layout, image_column=self.image_column)
        vectors = embed_images(self.backend, units, self.batch_size)
        if self.normalize:
            vectors = F.normalize(vectors, dim=1)
        info = {"backend": self._backend_id(), "normalized": self.normalize, "layout": asdict(self.layout),
                "neighbours": "none" if nb is None else f"given [{nb.shape[0]}, {nb.shape[1]}]"}
        return ItemEmbeddings(vectors, self.name, info)
