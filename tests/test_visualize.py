"""Pictures of predictions: the captioned error grids, labelled faces."""
from PIL import Image

from maskage.pipeline.visualize import captioned_grid


def test_captioned_grid_places_each_picture_with_its_caption():
    red, blue = Image.new("RGB", (50, 30), (255, 0, 0)), Image.new("RGB", (20, 20), (0, 0, 255))
    grid = captioned_grid([(red, "a->b 0.90"), (blue, "c->d 0.80"), (red, "e")], columns=2, tile=40, caption=10)
    assert grid.size == (80, 100)  # 2 columns of 40; 2 rows of 40 + 10
    assert grid.getpixel((20, 20)) == (255, 0, 0) and grid.getpixel((60, 20)) == (0, 0, 255)
    assert grid.getpixel((20, 70)) == (255, 0, 0) and grid.getpixel((60, 70)) == (255, 255, 255)  # no 4th picture
    darkest, _ = grid.crop((0, 40, 40, 50)).convert("L").getextrema()
    assert darkest < 128  # the caption's text is drawn under the picture


def test_annotate_puts_a_tag_before_each_label():
    import numpy as np

    from maskage.pipeline.core import Prediction
    from maskage.pipeline.visualize import COLOURS, annotate

    photo = np.full((200, 500, 3), 255, np.uint8)
    preds = [Prediction("p", 0, "wear", "male", "<30", face_box=(20, 80, 80, 140)),
             Prediction("p", 1, "not_wear", "female", "<30", face_box=(300, 80, 360, 140))]

    def label_width(img, colour):  # the filled label box's width, in its row above the face boxes
        row = np.asarray(img)[70]
        return int((np.abs(row.astype(int) - colour).sum(1) == 0).sum())

    plain, tagged = annotate(photo, preds), annotate(photo, preds, ["#3", "#12"])
    for colour in (COLOURS["wear"], COLOURS["not_wear"]):
        assert label_width(tagged, colour) > label_width(plain, colour) > 0  # the tag makes each label longer
    assert np.array_equal(np.asarray(annotate(photo, preds, None)), np.asarray(plain))
