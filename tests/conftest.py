"""Fixtures shared by several test files (plain helpers live in apps_fixtures.py, which tests import)."""

from __future__ import annotations

from pathlib import Path

import pytest
from apps_fixtures import synthetic_photos, tiny_model_and_processor

STORE_CLASSES = ["red circle", "blue square", "green star", "purple cross", "white circle"]


@pytest.fixture(scope="module")
def store_model():
    """(tiny random CLIPModel, CLIPProcessor): what the store tests embed with."""
    return tiny_model_and_processor()


@pytest.fixture
def store_photos(tmp_path) -> Path:
    """A fresh folder of 10 synthetic photos (2 of each of `STORE_CLASSES`) that the test may change."""
    synthetic_photos(tmp_path / "photos", STORE_CLASSES, per_class=2)
    return tmp_path / "photos"
