"""Zero-shot classification: prompt ensembling, scores equal to CLIPModel's own logits, batching, caching."""

from __future__ import annotations

import pytest
import torch
from apps_fixtures import synthetic_photos, tiny_model_and_processor
from PIL import Image

from torchclip.templates import IMAGENET_7_TEMPLATES, IMAGENET_TEMPLATES, get_templates
from torchclip.zero_shot import ZeroShotClassifier, pipeline

LABELS = ["red circle", "blue square", "green star"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model, processor = tiny_model_and_processor()
    photos = synthetic_photos(tmp_path_factory.mktemp("photos"), LABELS, per_class=2)
    return model, processor, sorted(photos)


def test_template_sets_by_name():
    assert len(IMAGENET_TEMPLATES) == 80 and len(set(IMAGENET_TEMPLATES)) == 80
    assert set(IMAGENET_7_TEMPLATES) <= set(IMAGENET_TEMPLATES)
    assert get_templates("imagenet") == list(IMAGENET_TEMPLATES)
    assert get_templates("a sketch of {}") == ["a sketch of {}"]
    with pytest.raises(ValueError, match="unknown template set 'imagenett'"):
        get_templates("imagenett")
    with pytest.raises(ValueError, match="no \\{\\} where the class name goes"):
        get_templates(["a photo of a {}.", "no placeholder"])


def test_class_embeddings_are_ensembled_prompts(setup):
    model, processor, _ = setup
    templates = ["a photo of a {}.", "art of the {}."]
    classifier = ZeroShotClassifier(model, processor, LABELS, templates=templates)
    with torch.no_grad():
        for row, label in enumerate(LABELS):
            tokens = processor.tokenizer([t.format(label) for t in templates], padding=True, return_tensors="pt")
            prompts = model.get_text_features(tokens["input_ids"], tokens["attention_mask"])
            mean = torch.nn.functional.normalize(prompts, dim=-1).mean(dim=0)
            torch.testing.assert_close(classifier.class_embeddings[row], mean / mean.norm(), atol=1e-5, rtol=0)


def test_scores_equal_clip_logits_softmax(setup):
    """With one template that is just the label, the scores are CLIPModel's logits_per_image softmax."""
    model, processor, photos = setup
    classifier = ZeroShotClassifier(model, processor, LABELS, templates="none", batch_size=4)
    rankings = classifier(photos)
    inputs = processor(text=LABELS, images=photos, return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = model(**inputs).logits_per_image.softmax(dim=-1)
    assert len(rankings) == len(photos)
    for ranking, row in zip(rankings, expected):
        assert [r["label"] for r in ranking] == [LABELS[i] for i in row.argsort(descending=True).tolist()]
        got = torch.tensor([r["score"] for r in ranking])
        torch.testing.assert_close(got, row.sort(descending=True).values, atol=1e-5, rtol=0)


def test_label_embeddings_built_once_and_batches_match_single_images(setup, monkeypatch):
    model, processor, photos = setup
    calls = []
    original = model.get_text_features
    monkeypatch.setattr(model, "get_text_features", lambda *a, **k: calls.append(1) or original(*a, **k))
    classifier = ZeroShotClassifier(model, processor, LABELS, batch_size=2)
    batched = classifier(photos, top_k=2)
    singles = [classifier(Image.open(path)) for path in photos]
    assert len(calls) == 1  # all labels' prompts in one batch, once
    for many, one in zip(batched, singles):
        assert len(many) == 2 and [r["label"] for r in many] == [r["label"] for r in one[:2]]
        assert many[0]["score"] >= many[1]["score"]
        assert sum(r["score"] for r in one) == pytest.approx(1.0, abs=1e-5)
        assert many[0]["score"] == pytest.approx(one[0]["score"], abs=1e-5)


def test_pipeline_helper_and_bad_input(setup):
    model, processor, photos = setup
    classify = pipeline("zero-shot-image-classification", model=model, processor=processor)
    first = classify(photos[0], candidate_labels=LABELS)
    reference = ZeroShotClassifier(model, processor, LABELS, templates=["This is a photo of {}."])(photos[0])
    assert [r["label"] for r in first] == [r["label"] for r in reference]
    assert classify(photos[:2], candidate_labels=["x", "y"], top_k=1)[1][0]["label"] in ("x", "y")
    with pytest.raises(ValueError, match="unsupported task 'text-generation'"):
        pipeline("text-generation", model=model, processor=processor)
    with pytest.raises(ValueError, match="also needs processor"):
        pipeline("zero-shot-image-classification", model=model)
    with pytest.raises(ValueError, match="at least one label"):
        ZeroShotClassifier(model, processor, [])
    with pytest.raises(ValueError, match="repeated: \\['cat'\\]"):
        ZeroShotClassifier(model, processor, ["cat", "dog", "cat"])
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        ZeroShotClassifier(model, processor, LABELS)(photos[0], top_k=0)
