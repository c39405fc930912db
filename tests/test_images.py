"""The shared image loader on the bad-input corpus: verdicts, conversions, bounded memory."""

from __future__ import annotations

import resource

import numpy as np
import pytest

from mtl.data.images import expand_inputs, list_images, load_image
from mtl.errors import ImageError
from tests.corpus import make_corpus, reference_pixels


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def test_every_entry_gets_the_right_verdict(corpus):
    for name, entry in corpus.items():
        if entry.good:
            pixels = load_image(entry.path, 64)
            assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8, name
        else:
            with pytest.raises(ImageError) as exc:
                load_image(entry.path, 64)
            assert entry.reason in exc.value.message, (name, exc.value.message)
            assert "\n" not in exc.value.message


@pytest.mark.parametrize(
    "name", ["cmyk.jpg", "gray16.png", "rgba.png", "palette.gif", "photo.webp", "rotated.jpg"]
)
def test_convertible_images_look_like_the_photo(corpus, name):
    """Each conversion gives (nearly) the original picture, not a clipped or inverted one."""
    want = reference_pixels(64).astype(np.float64)
    got = load_image(corpus[name].path, 64).astype(np.float64)
    if name == "gray16.png":
        luma = want @ np.array([0.299, 0.587, 0.114])  # what Pillow's "L" conversion computes
        want = luma[..., None].repeat(3, axis=2)
    if name == "rgba.png":  # alpha 200/255 over white
        want = want * 200 / 255 + 255 * 55 / 255
    assert np.abs(got - want).mean() < 12, name


def test_folder_walk_skips_directories_and_loops(corpus):
    folder = corpus["empty.jpg"].path.parent
    found = {p.name for p in list_images(folder)}
    assert "folder.jpg" not in found
    assert found == {name for name, e in corpus.items()}
    assert list_images(folder) == sorted(list_images(folder))


def test_directory_named_like_an_image_given_explicitly(corpus):
    folder = corpus["empty.jpg"].path.parent / "folder.jpg"
    with pytest.raises(ImageError, match="directory"):
        load_image(folder, 64)


def test_bomb_does_not_allocate(corpus):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageError, match="too large"):
        load_image(corpus["bomb.png"].path, 224)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert after - before < 200_000  # KiB: far below the 2.5 GB the header asks for


def test_globs_expand_sorted(corpus):
    folder = corpus["empty.jpg"].path.parent
    got = expand_inputs([str(folder / "*.png")])
    assert [p.name for p in got] == sorted(p.name for p in got)
    assert {p.name for p in got} == {n for n in corpus if n.endswith(".png")}
