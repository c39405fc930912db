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


def _stripes(path, width, height):
    """Three equal vertical bands, red | green | blue (or horizontal when tall)."""
    from PIL import Image

    px = np.zeros((height, width, 3), np.uint8)
    if width >= height:
        third = width // 3
        px[:, :third, 0], px[:, third : 2 * third, 1], px[:, 2 * third :, 2] = 255, 255, 255
    else:
        third = height // 3
        px[:third, :, 0], px[third : 2 * third, :, 1], px[2 * third :, :, 2] = 255, 255, 255
    Image.fromarray(px).save(path)
    return path


@pytest.mark.parametrize("size", [(300, 100), (100, 300)])
def test_center_fit_keeps_the_aspect_and_the_middle(tmp_path, size):
    path = _stripes(tmp_path / "stripes.png", *size)
    center = load_image(path, 32, "center").astype(int)
    squash = load_image(path, 32, "squash").astype(int)
    # center: only the middle band survives (the short side is the whole square; the
    # resampling filter blends a pixel of the neighbours into the outermost pixels)
    inner = center[2:-2, 2:-2]
    assert center.shape == (32, 32, 3) and (inner[..., 1] == 255).all()
    assert (inner[..., [0, 2]] == 0).all() and (center[..., 1] > 200).all()
    # squash: all three bands, each a third of the square
    assert squash[2, 2].tolist() == [255, 0, 0] and squash[-3, -3].tolist() == [0, 0, 255]


def test_center_fit_on_a_real_photo(sample_photos):
    """A landscape photo (scikit-image's coffee, 600x400): its central square."""
    from PIL import Image

    shared_photo = sample_photos["coffee"]
    with Image.open(shared_photo) as img:
        width, height = img.size
    assert width != height
    center = load_image(shared_photo, 224, "center")
    squash = load_image(shared_photo, 224, "squash")
    assert center.shape == squash.shape == (224, 224, 3)
    # the middle column of the photo is the middle column of both, only rescaled
    # differently: centre and squash agree there far better than at the edges
    mid = np.abs(center[:, 100:124].astype(int) - squash[:, 100:124].astype(int)).mean()
    edge = np.abs(center[:, :24].astype(int) - squash[:, :24].astype(int)).mean()
    assert mid < edge


def test_unknown_fit_is_a_usage_error(tmp_path):
    from mtl.errors import UsageError

    path = _stripes(tmp_path / "s.png", 30, 30)
    with pytest.raises(UsageError, match="Received fit='crop'"):
        load_image(path, 16, "crop")


def test_center_fit_of_an_extreme_strip_stays_small(tmp_path):
    """A 60000x2 PNG (a few kB): covering 256x256 whole would be a 2-gigapixel (5.9 GB) image;
    only its central region is resampled."""
    from PIL import Image

    path = tmp_path / "strip.png"
    Image.new("RGB", (60000, 2), (200, 100, 50)).save(path)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    pixels = load_image(path, 256, "center")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert pixels.shape == (256, 256, 3) and pixels[128, 128].tolist() == [200, 100, 50]
    assert after - before < 100_000  # KiB
