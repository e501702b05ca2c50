"""Annotation rendering for the UI: boxes with class and score, masks as translucent overlays, drawn
on a display-size copy of the image (boxes and masks in original pixels are scaled by ``scale`` =
display / original pixels). Pure functions of (image, labels), no Gradio.
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
    """A COCO RLE at original resolution -> a (height, width) bool mask at display resolution: the
    runs are sampled at the display's nearest pixels, so no full-resolution mask is ever made (a
    mask of a 108 MP image would be 108 MB, each)."""
    full_height, full_width = rle["size"]
    counts = rle["counts"]
    ends = np.cumsum(counts if isinstance(counts, list) else _rle_counts(counts))
    # Nearest pixels as OpenCV's INTER_NEAREST picks them (the same float steps).
    rows = np.minimum((np.arange(height) * (1 / (height / full_height))).astype(np.int64), full_height - 1)
    cols = np.minimum((np.arange(width) * (1 / (width / full_width))).astype(np.int64), full_width - 1)
    # Runs go down the columns and alternate background / foreground.
    return np.searchsorted(ends, cols[None, :] * full_height + rows[:, None], side="right") % 2 == 1


def _rle_counts(counts: str | bytes) -> np.ndarray:
    """The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``, vectorised;
    pycocotools itself only decodes to a full-frame mask)."""
    chars = np.frombuffer(counts.encode() if isinstance(counts, str) else counts, np.uint8).astype(np.int64) - 48
    last = (chars & 0x20) == 0  # the last 5-bit group of a number
    number = np.cumsum(last) - last
    shift = 5 * (np.arange(len(chars)) - np.flatnonzero(np.r_[True, last[:-1]])[number])
    values = np.zeros(int(last.sum()), np.int64)
    np.add.at(values, number, (chars & 0x1F) << shift)
    negative = (chars[last] & 0x10) != 0
    values[negative] -= np.int64(1) << (shift[last][negative] + 5)
    # From the fourth number on, each is stored as the difference to the number two places back.
    values[1::2] = np.cumsum(values[1::2])
    values[2::2] = np.cumsum(values[2::2])
    return values


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
                marker: tuple[float, float] | None = None, text_scale: float = 1.0) -> Image.Image:
    """A new RGB image: ``image`` (display size) with masks blended first, then boxes and labels on
    top so labels stay legible; ``marker`` (display pixels): a cross, e.g. a box's first corner;
    ``text_scale``: larger labels for an image the page shows smaller than its pixels."""
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
    font = _font(round(max(11, max(width, height) / 60) * text_scale))
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


def mask_overlay(size: tuple[int, int], shapes: list[Shape]) -> Image.Image | None:
    """The shapes' masks alone, as an RGBA image of ``size`` (display pixels), transparent elsewhere,
    for a viewer that shows or hides masks over the image; None when no shape has a mask."""
    with_masks = [shape for shape in shapes if shape.rle is not None]
    if not with_masks:
        return None
    width, height = size
    rgba = np.zeros((height, width, 4), dtype=np.uint8)
    for shape in with_masks:
        rgba[_mask_for_display(shape.rle, width, height)] = (*shape.color, round(255 * MASK_ALPHA))
    return Image.fromarray(rgba, "RGBA")


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

