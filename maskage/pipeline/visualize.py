"""Pictures of predictions: each face boxed and labelled."""
from __future__ import annotations

from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from ..images import ImageInput, load_image

# box colour by mask state: green worn, orange incorrect, red not worn
COLOURS = {"wear": (40, 200, 80), "incorrect": (255, 160, 0), "not_wear": (230, 40, 40)}


def prediction_label(pred) -> str:
    """Short text for a ``Prediction``: mask state, gender, age group and the class id."""
    if pred.error:
        return "error"
    return f"{pred.mask} {pred.gender} {pred.age} (class {pred.class_id})"


def annotate(image: ImageInput, preds, tags: Sequence[str] | None = None) -> Image.Image:
    """The photo with each prediction's face box and label drawn on it (a frame round the photo when no face was
    found). ``preds`` is one ``Prediction`` or a list of them (every face of the photo); ``tags``, one per
    prediction, go before its label (a video's track ids)."""
    img = Image.fromarray(load_image(image))
    d = ImageDraw.Draw(img)
    w, h = img.size
    width = max(2, round(min(w, h) / 150))
    font = ImageFont.load_default(size=max(12, round(min(w, h) / 28)))
    preds = preds if isinstance(preds, (list, tuple)) else [preds]
    for pred, tag in zip(preds, tags or [""] * len(preds)):
        colour = COLOURS.get(pred.mask or "", (200, 200, 200))
        text = f"{tag} {prediction_label(pred)}" if tag else prediction_label(pred)
        if pred.face_box is None:
            text += " - no face found, centre crop used"
            box = (width, width, w - width, h - width)
        else:
            box = tuple(float(v) for v in pred.face_box)
        d.rectangle(box, outline=colour, width=width)
        tx, ty = box[0], max(0.0, box[1] - font.size - 2 * width)
        tb = d.textbbox((tx, ty), text, font=font)
        d.rectangle((tb[0] - 2, tb[1] - 2, tb[2] + 2, tb[3] + 2), fill=colour)
        d.text((tx, ty), text, fill=(0, 0, 0), font=font)
    return img


def captioned_grid(tiles: Sequence[tuple[Image.Image, str]], columns: int, tile: int, caption: int = 12) -> Image.Image:
    """Pictures scaled to ``tile`` squares, ``columns`` a row, each with its caption below it (error grids)."""
    rows = (len(tiles) + columns - 1) // columns
    grid = Image.new("RGB", (tile * columns, (tile + caption) * rows), "white")
    draw = ImageDraw.Draw(grid)
    for i, (picture, text) in enumerate(tiles):
        x, y = tile * (i % columns), (tile + caption) * (i // columns)
        grid.paste(picture.convert("RGB").resize((tile, tile)), (x, y))
        draw.text((x + 2, y + tile), text, fill="black")
    return grid


def contact_sheet(images: Sequence[Image.Image], columns: int = 2, tile: int = 384) -> Image.Image:
    """Images side by side, each scaled to fit a ``tile`` square."""
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * tile, max(rows, 1) * tile), (255, 255, 255))
    for i, im in enumerate(images):
        im = im.copy()
        im.thumbnail((tile, tile))
        x, y = (i % columns) * tile, (i // columns) * tile
        sheet.paste(im, (x + (tile - im.width) // 2, y + (tile - im.height) // 2))
    return sheet
