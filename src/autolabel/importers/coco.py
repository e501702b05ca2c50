"""Read a COCO detection/instance-segmentation file (with its images) into a :class:`Dataset`.

* Categories become classes in category-id order; labels are matched to them by id.
* ``bbox`` ``[x, y, w, h]`` becomes ``xyxy``; a polygon or RLE ``segmentation`` becomes a COCO RLE
  (pycocotools rasterization, so the mask is what every COCO reader sees). An annotation whose box
  is empty but whose mask is not gets the mask's box.
* ``iscrowd: 1`` annotations are kept with ``iscrowd=True`` (evaluation ignores matches to them);
  the store cannot hold them, so ``import`` skips and counts them.
* Images are found under ``images_dir`` or, by default, next to the JSON file, in ``images/`` next to
  it, or in ``../images/<split>/`` for ``annotations/instances_<split>.json`` (the layout ``autolabel
  export --split`` writes). Names that are absolute or climb out of the folder are refused.
* Frames: COCO ``width``/``height`` should be the EXIF-oriented size (what OpenCV, Ultralytics,
  Detectron2 and our exports use). When they equal the *stored* size of a file whose EXIF orientation
  swaps the sides (5-8), the labels were drawn on the stored pixels and are rotated into the oriented
  frame. Any other size mismatch marks the image failed (skipped, reported) rather than guessing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from autolabel.importers.dataset import (
    Dataset,
    DatasetImage,
    DatasetLabel,
    ImportFormatError,
    orient_box,
    orient_rle,
    probe_files,
    safe_join,
)


def _load_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise ImportFormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ImportFormatError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "categories")):
        raise ImportFormatError(f"{path} is not a COCO file: it needs 'images' and 'categories' lists")
    if not isinstance(data.get("annotations", []), list):
        raise ImportFormatError(f"{path}: 'annotations' must be a list")
    return data


def image_roots(json_path: Path, images_dir: str | Path | None) -> list[Path]:
    """Folders an image's ``file_name`` may be relative to, most likely first."""
    if images_dir is not None:
        return [Path(images_dir).resolve()]
    parent = json_path.resolve().parent
    roots = [parent, parent / "images"]
    match = re.fullmatch(r"instances_(.+)\.json", json_path.name)
    if match:
        roots.append(parent.parent / "images" / match.group(1))
    return roots


def _segmentation_rle(seg, height: int, width: int, where: str) -> dict | None:
    from autolabel.geometry import mask_to_rle, polygons_to_rle, rle_to_mask

    if seg is None or seg == [] or seg == {}:
        return None
    try:
        if isinstance(seg, list):
            polygons = [p for p in seg if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]
            return polygons_to_rle(polygons, height, width) if polygons else None
        if isinstance(seg, dict):
            if [int(v) for v in seg.get("size", [])] != [height, width]:
                raise ImportFormatError(f"{where}: RLE size {seg.get('size')} is not the image's [height, width] "
                                        f"[{height}, {width}]")
            if isinstance(seg.get("counts"), str):
                return {"size": [height, width], "counts": seg["counts"]}
            return mask_to_rle(rle_to_mask(seg))  # uncompressed counts -> compressed
    except (ValueError, TypeError) as exc:
        raise ImportFormatError(f"{where}: invalid segmentation ({exc})") from None
    raise ImportFormatError(f"{where}: segmentation must be a list of polygons or an RLE dict")


def load_coco(json_path: str | Path, images_dir: str | Path | None = None) -> Dataset:
    """Parse a COCO file and probe its images (oriented size, SHA-256). See the module docstring."""
    from autolabel.geometry import rle_area, rle_to_xyxy

    json_path = Path(json_path)
    data = _load_json(json_path)
    categories = sorted(data["categories"], key=lambda c: c.get("id", 0) if isinstance(c, dict) else 0)
    class_of: dict[int, str] = {}
    for cat in categories:
        if not isinstance(cat, dict) or "id" not in cat or not str(cat.get("name", "")).strip():
            raise ImportFormatError(f"{json_path}: every category needs an 'id' and a 'name', got {cat!r}")
        if cat["name"] in class_of.values():
            raise ImportFormatError(f"{json_path}: category name {cat['name']!r} is used twice")
        class_of[int(cat["id"])] = str(cat["name"])

    roots = image_roots(json_path, images_dir)
    coco_images: dict[int, dict] = {}
    paths: dict[int, Path] = {}
    for im in data["images"]:
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise ImportFormatError(f"{json_path}: every image needs an 'id' and a 'file_name', got {im!r}")
        candidates = [safe_join(root, str(im["file_name"]), str(json_path)) for root in roots]
        paths[int(im["id"])] = next((c for c in candidates if c.is_file()), candidates[0])
        coco_images[int(im["id"])] = im
    if len(set(paths.values())) != len(paths):
        raise ImportFormatError(f"{json_path}: two image entries name the same file")

    ids = sorted(paths, key=lambda i: str(paths[i]))
    infos = dict(zip(ids, probe_files([paths[i] for i in ids])))
    images: dict[int, DatasetImage] = {}
    frames: dict[int, int] = {}  # image id -> EXIF orientation the labels must be turned by (1: none)
    for image_id in ids:
        info, im = infos[image_id], coco_images[image_id]
        image = DatasetImage(str(paths[image_id]), info.width, info.height, info.sha256, error=info.error)
        images[image_id] = image
        if info.error:
            continue
        declared = (int(im.get("width") or info.width), int(im.get("height") or info.height))
        if declared == (info.width, info.height):
            frames[image_id] = 1
        elif declared == (info.raw_width, info.raw_height) and info.orientation in (5, 6, 7, 8):
            frames[image_id] = info.orientation
        else:
            image.error = (f"{image.path}: COCO says {declared[0]}x{declared[1]} but the image is "
                           f"{info.width}x{info.height} (after EXIF orientation); labels were made for another copy")

    dataset = Dataset("coco", str(json_path.resolve()), list(class_of.values()), [images[i] for i in ids])
    for index, ann in enumerate(data.get("annotations", [])):
        where = f"{json_path}: annotation {ann.get('id', index) if isinstance(ann, dict) else index}"
        if not isinstance(ann, dict) or "image_id" not in ann or "category_id" not in ann:
            raise ImportFormatError(f"{where} needs 'image_id' and 'category_id'")
        image_id, cat_id = int(ann["image_id"]), int(ann["category_id"])
        if image_id not in images:
            raise ImportFormatError(f"{where} refers to image {image_id}, which is not in 'images'")
        if cat_id not in class_of:
            raise ImportFormatError(f"{where} refers to category {cat_id}, which is not in 'categories'")
        image = images[image_id]
        if image.error:
            continue
        orientation = frames[image_id]
        im = coco_images[image_id]
        # Labels are in the frame COCO declares: the oriented one, or the stored one (sides swapped).
        frame_w, frame_h = (image.width, image.height) if orientation == 1 else (image.height, image.width)
        rle = _segmentation_rle(ann.get("segmentation"), frame_h, frame_w, where)
        bbox = ann.get("bbox")
        if isinstance(bbox, list) and len(bbox) == 4 and bbox[2] > 0 and bbox[3] > 0:
            x, y, w, h = map(float, bbox)
            xyxy = (x, y, x + w, y + h)
        elif rle is not None and rle_area(rle) > 0:
            xyxy = tuple(float(v) for v in rle_to_xyxy(rle))
        else:
            dataset.skipped_invalid += 1
            continue
        if not all(np.isfinite(xyxy)):
            raise ImportFormatError(f"{where}: bbox {bbox} is not finite")
        if orientation != 1:
            xyxy = orient_box(xyxy, orientation, im["width"], im["height"])
            rle = orient_rle(rle, orientation) if rle is not None else None
        xyxy = tuple(float(v) for v in np.clip(xyxy, 0, [image.width, image.height] * 2))
        if not (xyxy[2] > xyxy[0] and xyxy[3] > xyxy[1]):  # wholly outside the image
            dataset.skipped_invalid += 1
            continue
        image.labels.append(DatasetLabel(class_of[cat_id], xyxy, rle, bool(ann.get("iscrowd", 0))))
        dataset.crowd += bool(ann.get("iscrowd", 0))
    return dataset
