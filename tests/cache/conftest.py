"""Real images shared by the cache tests of a module."""

from __future__ import annotations

from pathlib import Path

import pytest

from cache_images import create_images


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return create_images(tmp_path_factory.mktemp("cache-images"))
