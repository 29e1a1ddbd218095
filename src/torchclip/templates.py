"""Prompt templates for zero-shot classification; `{}` stands for the class name.

The CLIP paper builds each class's embedding from many phrasings of it ("prompt ensembling": the
normalised embeddings of every prompt are averaged), which adds about 3.5 points of ImageNet top-1
over the class name alone. The sets here are available by name wherever templates are accepted:

- ``imagenet``: the paper's 80 ImageNet prompts (OpenAI's `Prompt_Engineering_for_ImageNet` notebook);
- ``imagenet-7``: the 7 of them the notebook's forward selection kept, nearly as good and 11x cheaper;
- ``default``: a short, neutral set for photos and drawings of anything;
- ``photo``: the single prompt "a photo of a {}.";
- ``none``: the bare class name.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

IMAGENET_7_TEMPLATES: tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)

DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.", "a photo of the {}.", "an image of a {}.", "{}")

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "imagenet": IMAGENET_TEMPLATES,
    "imagenet-7": IMAGENET_7_TEMPLATES,
    "default": DEFAULT_TEMPLATES,
    "photo": ("a photo of a {}.",),
    "none": ("{}",),
}


def get_templates(templates: str | Sequence[str] | None = None) -> list[str]:
    """A template set by name (see `TEMPLATE_SETS`), or a list of templates checked to contain `{}`."""
    if templates is None:
        return list(DEFAULT_TEMPLATES)
    if isinstance(templates, str):
        if templates in TEMPLATE_SETS:
            return list(TEMPLATE_SETS[templates])
        if "{" not in templates:
            known = sorted(TEMPLATE_SETS)
            raise ValueError(f"unknown template set {templates!r}; known: {known} (or a template with {{}})")
        templates = [templates]
    templates = list(templates)
    if not templates:
        raise ValueError("at least one prompt template is needed")
    for template in templates:
        check_template(template)
    return templates


def check_template(template: object) -> None:
    """A template is a string with exactly one `{}` (where the class name goes); `{{` and `}}` are braces."""
    if not isinstance(template, str):
        raise ValueError(f"prompt template {template!r} is not a string")
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(f"prompt template {template!r}: {exc} (write {{{{ and }}}} for literal braces)") from None
    if not fields:
        raise ValueError(f"prompt template {template!r} has no {{}} where the class name goes")
    if fields != [""] and not all(name == "0" for name in fields):  # "{0}" may repeat
        raise ValueError(
            f"prompt template {template!r} must have exactly one {{}} where the class name goes, "
            f"found {len(fields)} field(s): {['{' + name + '}' for name in fields]}"
        )
