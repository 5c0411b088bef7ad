import pytest


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


@pytest.fixture(scope="module")
def build_once():
    """build_once(key, build) -> build() the first time ``key`` is asked for in this module, the
    same model after that; the Keras session is cleared when the module is done."""
    cache: dict = {}

    def get(key, build):
        if key not in cache:
            cache[key] = build()
        return cache[key]

    yield get
    cache.clear()
    import keras  # heavy optional import, kept local: most of this folder's tests need no Keras

    keras.backend.clear_session()
