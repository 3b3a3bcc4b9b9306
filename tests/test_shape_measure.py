"""reprogrid.review.shapes names what a picture drawn as builtin:shapes's training set is shows."""

import itertools

import numpy as np
import pytest
from PIL import Image, ImageFilter

from reprogrid.review.shapes import (
    BACKGROUND_COLOURS,
    RADII,
    SHAPE_COLOURS,
    SHAPES,
    SIZE,
    centre_distance,
    draw,
    measure,
    silhouette,
)


def picture(shape: str, colour: str, background: str, radius: float = 13) -> Image.Image:
    return Image.fromarray(draw(shape, colour, background, SIZE / 2, SIZE / 2, radius))


def other_than(colour: str, index: int) -> str:
    backgrounds = [b for b in BACKGROUND_COLOURS if b != colour]
    return backgrounds[index % len(backgrounds)]


@pytest.mark.parametrize(("shape", "radius"), list(itertools.product(SHAPES, RADII)))
def test_every_drawn_shape_and_colour_is_named_at_every_size(shape, radius):
    for i, colour in enumerate(SHAPE_COLOURS):
        found = measure(picture(shape, colour, other_than(colour, i), radius))
        assert (found.shape, found.colour) == (shape, colour), (colour, shape, radius)


@pytest.mark.parametrize("background", BACKGROUND_COLOURS)
def test_every_background_is_named(background):
    colour = next(c for c in SHAPE_COLOURS if c != background)
    assert measure(picture("circle", colour, background)).background == background


def test_the_centre_is_where_the_shape_was_drawn():
    found = measure(Image.fromarray(draw("square", "red", "white", 20, 40, 9)))
    assert found.centre is not None and np.allclose(found.centre, (20, 40), atol=1)


@pytest.mark.parametrize("shape", SHAPES)
def test_a_blurred_shape_keeps_its_kind(shape):
    blurred = picture(shape, "blue", "white", 17).filter(ImageFilter.GaussianBlur(1.5))
    assert measure(blurred).shape == shape


def test_a_speck_away_from_the_shape_does_not_change_its_kind():
    pixels = draw("square", "yellow", "black", 20, 20, 9).copy()
    pixels[50:53, 50:53] = SHAPE_COLOURS["yellow"]
    assert measure(Image.fromarray(pixels)).shape == "square"


def test_a_blurred_thin_shape_is_named_by_its_own_colour_not_its_edges():
    # A star's arms are thin: blurred, most of its pixels mix yellow with the red around it.
    blurred = picture("star", "yellow", "red", 9).filter(ImageFilter.GaussianBlur(1.0))
    assert measure(blurred).colour == "yellow"


def test_a_flat_picture_has_no_shape():
    found = measure(Image.new("RGB", (SIZE, SIZE), BACKGROUND_COLOURS["gray"]))
    assert (found.background, found.shape, found.colour, found.centre) == ("gray", None, None, None)


def test_a_silhouette_covers_the_shapes_area_in_4x4_blocks_whatever_its_colours():
    drawn = {
        pair: silhouette(draw("square", *pair, 30, 34, 9), *pair)
        for pair in [("red", "blue"), ("yellow", "black"), ("purple", "white")]
    }
    first = drawn["red", "blue"]
    assert first.shape == (SIZE // 4, SIZE // 4)
    assert first.sum() * 16 == pytest.approx(18 * 18, rel=0.05)
    assert first[7, 6] == 1.0 and first[0, 0] == 0.0
    for other in drawn.values():
        np.testing.assert_allclose(other, first, atol=0.02)


def test_the_centre_distance_is_infinite_when_a_picture_has_no_shape():
    shape = measure(picture("circle", "red", "blue"))
    flat = measure(Image.new("RGB", (SIZE, SIZE), BACKGROUND_COLOURS["blue"]))
    assert centre_distance(shape, shape) == 0.0
    assert centre_distance(shape, flat) == float("inf")
