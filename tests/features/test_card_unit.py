import numpy as np
import pytest
import torch
from PIL import Image

from sidrec.features import CardEncoder, CardLayout, nearest_neighbours, render_units, write_units
from sidrec.features.card import _font, find_font, wrap_text

BACKGROUND = np.array([255, 255, 255])


def _ink(img: Image.Image, box) -> int:
    """Number of pixels in `box` that differ from the white background."""
    region = np.asarray(img.crop(box), dtype=np.int16)
    return int((np.abs(region - BACKGROUND).sum(axis=2) > 30).sum())


def test_real_truetype_font():
    assert find_font().suffix == ".ttf" and find_font(bold=True).name == "DejaVuSans-Bold.ttf"
    assert _font(20).getlength("MMMM") > _font(20).getlength("iiii")  # proportional, not a bitmap default


def test_nearest_neighbours_excludes_self_and_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 6, generator=g)
    nb = nearest_neighbours(x, k=3, chunk_size=7)
    assert nb.shape == (50, 3) and nb.dtype == torch.long
    assert not (nb == torch.arange(50)[:, None]).any()
    xn = torch.nn.functional.normalize(x, dim=1)
    sims = (xn @ xn.T).fill_diagonal_(-2)
    assert torch.equal(nb, sims.topk(3, dim=1).indices)
    assert nearest_neighbours(x[:2], k=3).tolist() == [[1, -1, -1], [0, -1, -1]]


def test_wrap_text_fits_width_and_ellipsises():
    font = _font(18)
    text = "a fairly long product title that certainly needs several lines " * 3 + "Supercalifragilistic" * 4
    lines = wrap_text(text, font, 150, max_lines=3)
    assert len(lines) == 3 and lines[-1].endswith("…")
    assert all(font.getlength(line) <= 150 for line in lines)
    assert wrap_text("short", font, 150, max_lines=3) == ["short"]


def test_rendering_is_deterministic(catalogue):
    nb = torch.tensor([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])
    a = [np.asarray(u) for u in render_units(catalogue, nb, size=256)]
    b = [np.asarray(u) for u in render_units(catalogue, nb, size=256)]
    assert all(u.shape == (256, 256, 3) for u in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], a[3])


def test_text_and_picture_land_in_their_regions(catalogue):
    layout = CardLayout(size=256)
    with_picture, without_picture = render_units(catalogue, None, rows=[0, 3], layout=layout)
    pic_bottom = round(layout.image_ratio * layout.size)
    # Item 0 has a red picture on top and its text below it.
    top = np.asarray(with_picture.crop((0, 0, 256, pic_bottom)))
    assert ((top[..., 0] > 180) & (top[..., 1] < 80)).sum() > 1000
    assert _ink(with_picture, (0, pic_bottom, 256, 256)) > 200
    # Item 3 has no picture: the text starts at the top instead.
    assert _ink(without_picture, (0, 0, 256, 40)) > 100


def test_neighbour_strip_only_when_neighbours_exist(catalogue):
    layout = CardLayout(size=256)
    strip_top = layout.size - round(layout.strip_ratio * layout.size)
    nb = torch.tensor([[1, 2, -1], [-1, -1, -1], [0, 1, 3], [0, 1, 2]])
    units = list(render_units(catalogue, nb, layout=layout))
    bare = next(render_units(catalogue, None, rows=[0], layout=layout))
    strip_box = (0, strip_top + 2, 256, 256)
    assert _ink(units[0], strip_box) > 0.5 * 256 * (256 - strip_top - 2)  # tinted strip drawn
    assert _ink(units[1], strip_box) == 0  # only -1 entries: no strip
    assert _ink(bare, strip_box) == 0
    # Fewer valid neighbours -> the third slot stays strip-coloured (no placeholder there).
    third = np.asarray(units[0].crop((190, strip_top + 30, 250, strip_top + 50)))
    assert np.array_equal(np.unique(third.reshape(-1, 3), axis=0), [[0xEE, 0xF1, 0xF5]])


def test_bad_neighbours_rejected(catalogue):
    with pytest.raises(ValueError, match="n_items"):
        next(render_units(catalogue, torch.zeros(3, 2, dtype=torch.long)))
    with pytest.raises(ValueError, match=">= n_items"):
        next(render_units(catalogue, torch.full((4, 2), 9)))


def test_write_units_png(catalogue, tmp_path):
    paths = write_units(catalogue, tmp_path / "units", rows=[2, 0], size=160)
    assert [p.name for p in paths] == ["000002_C3.png", "000000_A1.png"]
    assert Image.open(paths[0]).size == (160, 160)
    assert not list((tmp_path / "units").glob(".*tmp"))


def test_card_encoder_cache_and_neighbour_sensitivity(catalogue, tmp_path):
    collab = torch.eye(4) + 0.1
    enc = CardEncoder(cache_dir=tmp_path, size=192)
    emb = enc.encode(catalogue, collaborative=collab)
    assert emb.vectors.shape == (4, 1280) and torch.isfinite(emb.vectors).all()
    other = enc.encode(catalogue, neighbours=torch.tensor([[3], [3], [3], [0]]))
    assert not torch.allclose(emb.vectors, other.vectors)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    again = CardEncoder(cache_dir=tmp_path, size=192)
    assert torch.equal(again.encode(catalogue, collaborative=collab).vectors, emb.vectors)
    assert again._backend is None
