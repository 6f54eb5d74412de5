import pandas as pd
import pytest
import torch

from sidrec.features import ImageEncoder, build_encoder
from sidrec.features.image import Preprocess, load_image


@pytest.fixture(scope="module")
def tiny_siglip(tmp_path_factory) -> str:
    """A randomly initialised SigLIP (vision + text towers, 32-d) saved to disk, loaded by path."""
    from transformers import SiglipConfig, SiglipModel, SiglipTextConfig, SiglipVisionConfig

    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=2, image_size=32, patch_size=8)
    text = SiglipTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                            num_attention_heads=2, vocab_size=64, bos_token_id=None, eos_token_id=None)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_siglip")
    SiglipModel(SiglipConfig(vision_config=vision.to_dict(), text_config=text.to_dict())).save_pretrained(path)
    return str(path)


def test_load_image_never_raises(catalogue):
    good, missing, broken, none = catalogue["image"].tolist()
    assert load_image(good).size == (120, 80)
    assert load_image(missing) is None and load_image(broken) is None and load_image(none) is None
    assert load_image("https://example.invalid/x.jpg", allow_download=False) is None


def test_preprocess_crop_and_normalise():
    from PIL import Image

    img = Image.new("RGB", (300, 100), (255, 255, 255))
    x = Preprocess(size=64, resize=72).batch([img, img])
    assert x.shape == (2, 3, 64, 64)
    expected = (1.0 - torch.tensor(Preprocess(size=64).mean)) / torch.tensor(Preprocess(size=64).std)
    assert torch.allclose(x[0, :, 10, 10], expected, atol=1e-5)


def test_efficientnet_lite0_offline_survives_missing_pictures(catalogue):
    emb = ImageEncoder(cache_dir=None).encode(catalogue)
    assert emb.vectors.shape == (4, 1280)
    assert torch.isfinite(emb.vectors).all()
    assert emb.info["missing_images"] == [1, 2, 3]
    assert emb.vectors[0].norm() == pytest.approx(1.0, abs=1e-4)
    assert torch.count_nonzero(emb.vectors[1:]) == 0


def test_tiny_siglip_by_path_with_card_fallback(catalogue, tiny_siglip):
    emb = build_encoder("image", backend=tiny_siglip, fallback="card", cache_dir=None).encode(catalogue)
    assert emb.vectors.shape == (4, 32)
    assert torch.isfinite(emb.vectors).all()
    # Every item has a vector: items without a picture got their CARD unit instead of zeros.
    assert torch.allclose(emb.vectors.norm(dim=1), torch.ones(4), atol=1e-4)
    assert emb.info["missing_images"] == [1, 2, 3]


def test_vision_only_model_uses_pooler(tmp_path):
    from transformers import SiglipVisionConfig, SiglipVisionModel

    cfg = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                             num_attention_heads=2, image_size=16, patch_size=8)
    SiglipVisionModel(cfg).save_pretrained(tmp_path / "vision")
    items = pd.DataFrame({"item_id": ["x"], "image": [None]})
    emb = ImageEncoder(backend=str(tmp_path / "vision"), cache_dir=None, normalize=False).encode(items)
    assert emb.vectors.shape == (1, 16) and torch.count_nonzero(emb.vectors) == 0


def test_bad_fallback_rejected():
    with pytest.raises(ValueError, match="fallback"):
        ImageEncoder(fallback="skip")
