"""The equivalent of OpenAI's `tests/test_consistency.py` (which no registry package ships: the `openai-clip`
sdist and the `clip-anytorch` wheel carry no tests), on the random-weight TorchScript archive of
scripts/make_convert_fixtures.py instead of OpenAI's downloads.

OpenAI's test loads each model twice, as TorchScript (`jit=True`) and eagerly (`jit=False`), preprocesses one
image with the returned transform, tokenizes three texts, and requires `model(image, text)` to give the same
label probabilities (atol 0.01, rtol 0.1). Here the TorchScript side is the archive itself, run by PyTorch's
TorchScript interpreter (in float32, as `clip.load(..., device="cpu", jit=True)` runs it), and the eager side
is `torchclip.load(archive, jit=False)`. The archive was scripted from OpenCLIP's model class, whose forward
returns (normalised image features, normalised text features, logit scale) rather than OpenAI's logits; the
logits are formed from those as OpenAI's forward forms them.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import torchclip

ARCHIVE = Path(__file__).parent / "data" / "convert" / "vit_jit.pt"
IMAGES = Path(torchclip.__file__).parent / "data" / "demo_images"


@pytest.fixture(scope="module")
def models():
    jit_model = torch.jit.load(str(ARCHIVE), map_location="cpu").float().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny model's vocabulary is not CLIP's
        py_model, preprocess = torchclip.load(ARCHIVE, device="cpu", jit=False)
    return jit_model, py_model, preprocess


def jit_logits(jit_model, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    image_features, text_features, logit_scale = jit_model(image, text)
    logits_per_image = logit_scale * image_features @ text_features.t()
    return logits_per_image, logits_per_image.t()


@pytest.mark.parametrize("image_name", sorted(p.name for p in IMAGES.glob("*.png"))[:3])
def test_consistency(models, image_name):
    jit_model, py_model, preprocess = models
    image = preprocess(Image.open(IMAGES / image_name)).unsqueeze(0)
    vocab = py_model.config.text_config.vocab_size  # start token vocab - 2, end token vocab - 1, zero padding
    texts = torch.zeros(3, py_model.config.text_config.max_position_embeddings, dtype=torch.long)
    for row, words in enumerate([[5, 17], [40], [99, 3, 250]]):
        texts[row, : len(words) + 2] = torch.tensor([vocab - 2, *words, vocab - 1])
    with torch.no_grad():
        logits_per_image, logits_per_text = jit_logits(jit_model, image, texts)
        jit_probs = logits_per_image.softmax(dim=-1).numpy()
        py_logits_per_image, py_logits_per_text = py_model(image, texts)
        py_probs = py_logits_per_image.softmax(dim=-1).numpy()
    assert np.allclose(jit_probs, py_probs, atol=0.01, rtol=0.1)  # OpenAI's own tolerance
    # and much closer than that: the same float32 arithmetic up to summation order
    assert torch.allclose(py_logits_per_image, logits_per_image, atol=1e-4)
    assert torch.allclose(py_logits_per_text, logits_per_text, atol=1e-4)
