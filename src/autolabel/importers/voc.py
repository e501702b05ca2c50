"""Read a Pascal VOC dataset into a :class:`Dataset`.

The source is a folder holding ``Annotations/*.xml`` (the devkit layout, images in ``JPEGImages/``)
or holding the XML files themselves (images beside them, as labelImg writes them). An XML's image is
its ``<filename>`` (or the name in ``<path>``, or its own stem with an image suffix), looked up under
``images_dir``, or else in ``JPEGImages/`` and beside the XML.

Boxes are 1-based inclusive pixels (the devkit's convention, the one ``export.voc`` writes): pixel
edges are ``[xmin - 1, xmax)``. ``<polygon>`` elements (``x1 y1 x2 y2 ...``, 1-based, the extension
our export, supervision and Roboflow write) become the object's mask. ``difficult`` objects are kept
(the report counts them). Classes follow ``labels.txt`` beside ``Annotations/`` when there is one
(our export writes it), then first-seen order.

``<size>`` follows the COCO reader's policy (``dataset.declared_frame``): the oriented size is taken
as is, the stored size of an EXIF-rotated image is turned, any other size fails that image. XML that
declares a DOCTYPE or entities is refused (no entity expansion, no external references).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
import xml.parsers.expat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autolabel.detections import Detections
from autolabel.importers.dataset import (Dataset, DatasetImage, ImportFormatError, declared_frame, human_labels,
                                         orient_labels, polygon_mask, probe_images, relative_inside)
from autolabel.images import IMAGE_EXTENSIONS

ANNOTATION_DIR = "Annotations"
IMAGE_DIR = "JPEGImages"
LABELS_FILE = "labels.txt"
_BOX_TAGS = ("xmin", "ymin", "xmax", "ymax")


@dataclass
class VocObject:
    name: str
    xyxy: np.ndarray | None  # pixel edges in the declared frame; None: no <bndbox>
    polygons: list[list[float]] = field(default_factory=list)  # 0-based pixel coordinates
    difficult: bool = False


@dataclass
class VocAnnotation:
    xml_path: Path
    names: list[str]  # file names to look for, most likely first
    size: tuple[int, int] | None  # the declared (width, height); None when absent or zero
    objects: list[VocObject]


def _refuse_declarations(data: bytes, path: Path) -> None:
    """Expat pass that stops at a DOCTYPE or an entity declaration (XML bombs, external entities)."""
    def refuse(*_args) -> None:
        raise ImportFormatError(f"{path}: DOCTYPE and ENTITY declarations are not allowed in VOC annotations")

    parser = xml.parsers.expat.ParserCreate()
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.Parse(data, True)


def parse_xml(path: Path) -> ET.Element:
    """The document's root element; one-line ``ImportFormatError`` for unreadable or unsafe XML."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImportFormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        _refuse_declarations(data, path)
        return ET.fromstring(data)
    except (xml.parsers.expat.ExpatError, ET.ParseError) as exc:
        raise ImportFormatError(f"{path} is not valid XML: {exc}") from None


def _number(element: ET.Element | None, tag: str, where: str) -> float:
    text = element.findtext(tag) if element is not None else None
    try:
        value = float((text or "").strip())
    except ValueError:
        raise ImportFormatError(f"{where}: <{tag}> {text!r} is not a number") from None
    if not np.isfinite(value):
        raise ImportFormatError(f"{where}: <{tag}> {text!r} is not finite")
    return value


def _declared_size(root: ET.Element, where: str) -> tuple[int, int] | None:
    size = root.find("size")
    if size is None or size.find("width") is None or size.find("height") is None:
        return None
    width, height = _number(size, "width", where), _number(size, "height", where)
    if width <= 0 or height <= 0:  # some tools write 0 when they did not read the image
        return None
    if not (width.is_integer() and height.is_integer()):
        raise ImportFormatError(f"{where}: <size> {width}x{height} is not whole pixels")
    return int(width), int(height)


def _polygon(element: ET.Element, where: str) -> list[float]:
    values: list[float] = []
    for k in range(1, len(element) // 2 + 1):
        if element.find(f"x{k}") is None:
            break
        values += [_number(element, f"x{k}", where) - 1, _number(element, f"y{k}", where) - 1]
    return values


def _object(element: ET.Element, where: str) -> VocObject:
    name = (element.findtext("name") or "").strip()
    if not name:
        raise ImportFormatError(f"{where} has no <name>")
    where = f"{where} ({name})"
    box = element.find("bndbox")
    xyxy = None
    if box is not None:
        xmin, ymin, xmax, ymax = (_number(box, tag, where) for tag in _BOX_TAGS)
        xyxy = np.array([xmin - 1, ymin - 1, xmax, ymax])  # 1-based inclusive -> pixel edges
    polygons = [_polygon(p, where) for p in element.findall("polygon")]
    difficult = (element.findtext("difficult") or "0").strip() in ("1", "true")
    return VocObject(name, xyxy, [p for p in polygons if p], difficult)


def read_annotation(path: Path) -> VocAnnotation:
    """One XML file, parsed and checked (coordinates in the declared frame, 0-based pixel edges)."""
    root = parse_xml(path)
    if root.tag != "annotation":
        raise ImportFormatError(f"{path} is not a VOC annotation: its root element is <{root.tag}>")
    names = []
    for text in (root.findtext("filename"), root.findtext("path")):
        text = (text or "").strip().replace("\\", "/")
        names += [text, text.rsplit("/", 1)[-1]] if text else []
    names += [path.stem + suffix for suffix in sorted(IMAGE_EXTENSIONS)]
    objects = [_object(obj, f"{path}: object {k}") for k, obj in enumerate(root.findall("object"), start=1)]
    return VocAnnotation(path, list(dict.fromkeys(names)), _declared_size(root, str(path)), objects)


def annotation_files(source: Path) -> tuple[Path, list[Path]]:
    """The dataset folder and its XML files (sorted)."""
    if not source.is_dir():
        raise ImportFormatError(f"{source} is not a folder: give the folder holding Annotations/ (or the .xml files)")
    folder = source / ANNOTATION_DIR if (source / ANNOTATION_DIR).is_dir() else source
    files = sorted(p for p in folder.glob("*.xml") if p.is_file())
    if not files:
        raise ImportFormatError(f"{folder} holds no .xml annotation files")
    return source, files


def find_image(annotation: VocAnnotation, roots: list[Path]) -> Path | None:
    for name in annotation.names:
        for root in roots:
            candidate = relative_inside(root, name)
            if candidate is not None and candidate.is_file():
                return candidate
    return None


def class_order(root: Path, annotations: list[VocAnnotation]) -> list[str]:
    """``labels.txt`` first when there is one, then names in first-seen order."""
    names: list[str] = []
    labels_file = root / LABELS_FILE
    if labels_file.is_file():
        names = [line.strip() for line in labels_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    for annotation in annotations:
        names += [obj.name for obj in annotation.objects]
    return list(dict.fromkeys(names))


def from_voc(objects: list[VocObject], width: int, height: int, class_index: dict[str, int],
             where: str = "") -> tuple[Detections, int]:
    """VOC objects of one ``width x height`` image -> (human labels, objects left out). Boxes are
    clipped to the image; an object with polygons gets their mask (and their extent without a box)."""
    boxes, class_ids, masks = [], [], []
    for k, obj in enumerate(objects, start=1):
        rle, extent = (polygon_mask(obj.polygons, width, height, f"{where}object {k}") if obj.polygons
                       else (None, None))
        xyxy = obj.xyxy if obj.xyxy is not None else extent
        if xyxy is None:
            continue
        xyxy = np.clip(xyxy, 0, [width, height, width, height])
        if xyxy[2] > xyxy[0] and xyxy[3] > xyxy[1]:
            boxes.append(xyxy)
            class_ids.append(class_index[obj.name])
            masks.append(rle)
    return human_labels(np.array(boxes).reshape(-1, 4), class_ids, masks), len(objects) - len(boxes)


def load_voc(source: str | Path, images_dir: str | Path | None = None, *, hash_files: bool = True) -> Dataset:
    """Parse a VOC dataset and probe its images (oriented size; SHA-256 with ``hash_files``)."""
    root, files = annotation_files(Path(source).resolve())
    annotations = [read_annotation(path) for path in files]
    classes = class_order(root, annotations)
    if not classes:
        raise ImportFormatError(f"{root}: no <object> in any annotation and no {LABELS_FILE}: no classes to import")
    class_index = {name: i for i, name in enumerate(classes)}

    found: dict[Path, VocAnnotation] = {}
    missing: list[DatasetImage] = []
    for annotation in annotations:
        roots = ([Path(images_dir).resolve()] if images_dir is not None
                 else [root / IMAGE_DIR, annotation.xml_path.parent])
        path = find_image(annotation, roots)
        if path is None:
            missing.append(DatasetImage(str(roots[0] / annotation.names[0]), error=(
                f"{annotation.xml_path}: image {annotation.names[0]!r} not found in "
                f"{' or '.join(str(r) for r in roots)} (give --images)")))
        elif path in found:
            raise ImportFormatError(f"{annotation.xml_path} and {found[path].xml_path} both describe {path}")
        else:
            found[path] = annotation

    paths = sorted(found, key=str)
    dataset = Dataset("voc", str(root), classes, sorted(probe_images(paths, hash_files) + missing, key=lambda i: i.path))
    difficult = 0
    for image in dataset.images:
        if image.error:
            continue
        annotation = found[Path(image.path)]
        declared = annotation.size or (image.width, image.height)
        try:
            orientation = declared_frame(image, declared, "VOC <size>")
        except ImportFormatError as exc:
            image.error = f"{annotation.xml_path}: {exc}"
            continue
        labels, left_out = from_voc(annotation.objects, *declared, class_index, f"{annotation.xml_path}: ")
        image.labels = orient_labels(labels, orientation, declared)
        dataset.skipped_invalid += left_out
        difficult += sum(obj.difficult for obj in annotation.objects)
    if difficult:
        dataset.notes.append(f"kept {difficult} objects marked difficult (VOC's evaluation ignores them; "
                             "here they count like the others)")
    return dataset
