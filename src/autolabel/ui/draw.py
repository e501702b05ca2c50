"""Annotation rendering for the UI: boxes with class and score, masks as translucent overlays.

Everything is drawn on a display-size copy of the image (long side ~1024 px), never on the full
12 MP frame: boxes and masks given in original pixels are scaled by ``scale`` (display pixels =
original pixels * scale). Pure functions of (image, labels): no Gradio, unit-tested directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Distinct, colour-blind-friendly colours (Okabe-Ito + Tableau), one per class index.
PALETTE = (
    (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0),
    (204, 121, 167), (78, 121, 167), (242, 142, 43), (225, 87, 89), (118, 183, 178), (89, 161, 79),
)
REJECTED_COLOR = (150, 150, 150)
MARKER_COLOR = (255, 0, 255)
MASK_ALPHA = 0.45


def class_color(index: int) -> tuple[int, int, int]:
    return PALETTE[int(index) % len(PALETTE)]


@dataclass(frozen=True)
class Shape:
    """One thing to draw. ``xyxy`` and ``rle`` in original pixels; ``rle`` a COCO RLE or None."""

    xyxy: tuple[float, float, float, float]
    label: str
    color: tuple[int, int, int]
    rle: dict | None = None
    dashed: bool = False
    thick: bool = False


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _mask_for_display(rle: dict, width: int, height: int) -> np.ndarray:
    """A COCO RLE at original resolution -> a (height, width) bool mask at display resolution."""
    import cv2

    from autolabel.geometry import rle_to_mask

    mask = rle_to_mask(rle).astype(np.uint8)
    if mask.shape != (height, width):
        mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
    return mask.astype(bool)


def _dashed_rectangle(draw: ImageDraw.ImageDraw, box, color, width: int, dash: int = 6) -> None:
    x0, y0, x1, y1 = box
    for a, b, horizontal, fixed in ((x0, x1, True, y0), (x0, x1, True, y1), (y0, y1, False, x0), (y0, y1, False, x1)):
        pos = a
        while pos < b:
            end = min(pos + dash, b)
            if horizontal:
                draw.line([(pos, fixed), (end, fixed)], fill=color, width=width)
            else:
                draw.line([(fixed, pos), (fixed, end)], fill=color, width=width)
            pos += 2 * dash


def draw_shapes(image: Image.Image, shapes: list[Shape], scale: float = 1.0,
                marker: tuple[float, float] | None = None) -> Image.Image:
    """A new RGB image: ``image`` (display size) with every shape drawn on it.

    Masks are blended first (``MASK_ALPHA``), then boxes and labels on top so labels stay legible.
    ``marker`` (display pixels) draws a cross, e.g. the first corner of a box being placed.
    """
    canvas = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    height, width = canvas.shape[:2]
    for shape in shapes:
        if shape.rle is None:
            continue
        mask = _mask_for_display(shape.rle, width, height)
        color = np.array(shape.color, dtype=np.float32)
        canvas[mask] = canvas[mask] * (1 - MASK_ALPHA) + color * MASK_ALPHA
    out = Image.fromarray(canvas.round().clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    line = max(2, round(max(width, height) / 400))
    font = _font(max(11, round(max(width, height) / 60)))
    for shape in shapes:
        x0, y0, x1, y1 = (float(v) * scale for v in shape.xyxy)
        box = (x0, y0, max(x0, x1), max(y0, y1))
        w = line * 2 if shape.thick else line
        if shape.dashed:
            _dashed_rectangle(draw, box, shape.color, w)
        else:
            draw.rectangle(box, outline=shape.color, width=w)
            if shape.thick:
                draw.rectangle((box[0] - w, box[1] - w, box[2] + w, box[3] + w), outline=(255, 255, 255), width=1)
        if shape.label:
            left, top, right, bottom = draw.textbbox((0, 0), shape.label, font=font)
            tw, th = right - left, bottom - top
            ty = box[1] - th - 4 if box[1] - th - 4 >= 0 else box[1]
            tx = min(max(0.0, box[0]), max(0.0, width - tw - 4))
            draw.rectangle((tx, ty, tx + tw + 4, ty + th + 4), fill=shape.color)
            text_color = (0, 0, 0) if sum(shape.color) > 380 else (255, 255, 255)
            draw.text((tx + 2 - left, ty + 2 - top), shape.label, fill=text_color, font=font)
    if marker is not None:
        mx, my = marker
        r = line * 4
        draw.line([(mx - r, my), (mx + r, my)], fill=MARKER_COLOR, width=line)
        draw.line([(mx, my - r), (mx, my + r)], fill=MARKER_COLOR, width=line)
    return out


def detection_shapes(detections, class_names: list[str], selected_id: int | None = None) -> list[Shape]:
    """``Detections`` (original pixels) -> shapes coloured by class, labelled ``"car 0.87"``.

    Stored labels (``ids`` set) read ``"#id class score"``, with ``human`` for a label without a
    score and `` (ok)`` / `` (rejected)`` for reviewed ones; rejected labels are grey, dashed and
    without mask; the label whose id is ``selected_id`` is drawn thick with a white halo.
    """
    shapes = []
    masks = detections.masks or [None] * len(detections)
    for i in range(len(detections)):
        cid = int(detections.class_ids[i])
        review = str(detections.reviews[i])
        rejected = review == "rejected"
        score = f"{float(detections.scores[i]):.2f}" if detections.has_score[i] else "human"
        label_id = None if detections.ids is None else int(detections.ids[i])
        text = f"{class_names[cid]} {score}" + {"accepted": " (ok)", "rejected": " (rejected)"}.get(review, "")
        shapes.append(Shape(tuple(map(float, detections.xyxy[i])), text if label_id is None else f"#{label_id} {text}",
                            REJECTED_COLOR if rejected else class_color(cid), None if rejected else masks[i],
                            dashed=rejected, thick=label_id is not None and label_id == selected_id))
    return shapes

