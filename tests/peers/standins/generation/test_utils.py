"""Stand-in: the sdist ships no tests/generation/. CLIP generates no text, so no generation tests apply;
ModelTesterMixin only checks whether a test class inherits this."""


class GenerationTesterMixin:
    pass
