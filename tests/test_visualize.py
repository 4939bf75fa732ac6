"""Pictures of predictions: the captioned error grids."""
from PIL import Image

from maskage.visualize import captioned_grid


def test_captioned_grid_places_each_picture_with_its_caption():
    red, blue = Image.new("RGB", (50, 30), (255, 0, 0)), Image.new("RGB", (20, 20), (0, 0, 255))
    grid = captioned_grid([(red, "a->b 0.90"), (blue, "c->d 0.80"), (red, "e")], columns=2, tile=40, caption=10)
    assert grid.size == (80, 100)  # 2 columns of 40; 2 rows of 40 + 10
    assert grid.getpixel((20, 20)) == (255, 0, 0) and grid.getpixel((60, 20)) == (0, 0, 255)
    assert grid.getpixel((20, 70)) == (255, 0, 0) and grid.getpixel((60, 70)) == (255, 255, 255)  # no 4th picture
    darkest, _ = grid.crop((0, 40, 40, 50)).convert("L").getextrema()
    assert darkest < 128  # the caption's text is drawn under the picture
