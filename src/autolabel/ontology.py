"""Classes and what finds them: text prompts, example boxes (exemplars), and negatives.

``--prompt person`` makes a class ``person`` found by the prompt "person";
``--prompt "car=car,automobile,van"`` makes a class ``car`` found by any of three prompts, and
``--prompt "car=car,van;not=toy car"`` adds a negative prompt: a box that matches "toy car" better
than the class's best prompt is not a car. An ontology file (YAML or JSON) can also carry a per-class
score threshold, negatives, and exemplars (a box drawn on an image, in that image's pixels after EXIF
orientation; paths relative to the file; ``negative: true`` for an example of what the class is not)::

    classes:
      - name: car
        prompts: [car, automobile, van]
        negatives: [toy car]
        threshold: 0.2
      - name: person
      - name: widget            # no prompts: found by its example boxes alone
        exemplars:
          - {image: examples/bench.jpg, box: [10, 20, 110, 90]}
          - {image: examples/shelf.jpg, box: [5, 5, 60, 40], negative: true}

``add_exemplars`` merges an exemplars file (``--exemplars``: a JSON list of ``{image, box, class,
negative?}``) into an ontology, ``with_exemplars`` exemplars given per class (the UI's example
boxes). Detections carry the class; the text prompt that matched is kept alongside (none for a
match through exemplars).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from autolabel.errors import AutolabelError, ConfigError

NEGATIVE_SPEC = "not"  # ``--prompt "car=car;not=toy car"``
_THRESHOLDS_KEPT = 8  # ``Ontology.thresholds`` arrays remembered per ontology


@dataclass(frozen=True)
class Exemplar:
    """An example box ``(x0, y0, x1, y1)`` in the pixels of ``image`` as oriented (EXIF applied).
    ``negative``: an example of what the class is not. ``sha256``: the image's content, recorded
    with a run so that its configuration changes when the image does; when not given (a new
    exemplar, not a recorded one) the image is read now, and the box checked against it."""

    image: str
    box: tuple[float, float, float, float]
    negative: bool = False
    sha256: str = ""

    def __post_init__(self) -> None:
        box = _box(self.box, f"the box of exemplar {self.image}")
        object.__setattr__(self, "box", box)
        if not (0 <= box[0] < box[2] and 0 <= box[1] < box[3]):
            raise ConfigError(f"exemplar box {list(box)} on {self.image} must be x0 < x1 and y0 < y1, "
                              "inside the image")
        if not self.sha256:
            object.__setattr__(self, "sha256", _checked_sha256(self.image, box))

    def to_dict(self) -> dict:
        out: dict = {"image": self.image, "sha256": self.sha256, "box": list(self.box)}
        if self.negative:
            out["negative"] = True
        return out


@dataclass(frozen=True)
class OntologyClass:
    name: str
    prompts: tuple[str, ...]
    threshold: float | None = None
    negatives: tuple[str, ...] = ()
    exemplars: tuple[Exemplar, ...] = ()

    def exemplars_of(self, negative: bool) -> tuple[Exemplar, ...]:
        return tuple(e for e in self.exemplars if e.negative == negative)

    def to_dict(self) -> dict:
        # The new keys only when set: runs recorded before they existed keep their configuration.
        out: dict = {"name": self.name, "prompts": list(self.prompts)}
        if self.threshold is not None:
            out["threshold"] = self.threshold
        if self.negatives:
            out["negatives"] = list(self.negatives)
        if self.exemplars:
            out["exemplars"] = [e.to_dict() for e in self.exemplars]
        return out


def _frozen(array: np.ndarray) -> np.ndarray:
    """``array``, read-only: the column constants of an ``Ontology`` are computed once and shared."""
    array.flags.writeable = False
    return array


def _clean(text: str, what: str) -> str:
    if not isinstance(text, str):
        raise ConfigError(f"{what} must be text, got {text!r}")
    cleaned = " ".join(text.split())
    if not cleaned:
        raise ConfigError(f"{what} is empty")
    return cleaned


def _texts(value, what: str) -> tuple[str, ...]:
    """A list of prompts (or one comma-separated string), cleaned, without repeats."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{what} must be a list of text, got {value!r}")
    return tuple(dict.fromkeys(_clean(p, what) for p in value))


def _box(value, what: str) -> tuple[float, float, float, float]:
    try:
        box = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be four numbers x0, y0, x1, y1, got {value!r}") from None
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise ConfigError(f"{what} must be four numbers x0, y0, x1, y1, got {value!r}")
    return box


def exemplar_from_dict(item, class_name: str, base: Path | None = None) -> Exemplar:
    """``{image, box, negative?, sha256?}`` -> an ``Exemplar``; a relative image path of a new
    exemplar (no recorded ``sha256``) is taken from ``base``, the folder of the file naming it."""
    what = f"an exemplar of class {class_name!r}"
    if not isinstance(item, dict) or "image" not in item or "box" not in item:
        raise ConfigError(f"{what} needs an 'image' and a 'box', got {item!r}")
    unknown = set(item) - {"image", "box", "negative", "sha256", "class"}
    if unknown:
        raise ConfigError(f"{what} has unknown keys: {', '.join(sorted(unknown))}")
    image = _clean(item["image"], f"the image of {what}")
    negative = item.get("negative", False)
    if not isinstance(negative, bool):
        raise ConfigError(f"'negative' of {what} must be true or false, got {negative!r}")
    sha256 = str(item.get("sha256") or "")
    if not sha256 and base is not None and not Path(image).is_absolute():
        image = str(base / image)
    return Exemplar(image, _box(item["box"], f"the box of {what}"), negative, sha256)


def _checked_sha256(image: str, box: tuple[float, float, float, float]) -> str:
    """The image's hash, after checking that it opens and holds the box."""
    from autolabel.images import file_sha256, oriented_size

    try:
        width, height = oriented_size(image)
        sha256 = file_sha256(image)
    except AutolabelError as exc:
        raise ConfigError(f"exemplar image: {exc}") from None
    if box[2] > width or box[3] > height:
        raise ConfigError(f"exemplar box {list(box)} reaches outside {image} ({width}x{height})")
    return sha256


@dataclass(frozen=True)
class Ontology:
    """Classes in a fixed order. A detector scores every candidate box against columns laid out as
    ``positive_class_ids`` then ``negative_class_ids``: the text prompts (``queries``), one column
    per class with exemplars (their averaged embedding), the negative prompts
    (``negative_queries``), one column per class with negative exemplars."""

    classes: tuple[OntologyClass, ...]

    def __post_init__(self) -> None:
        if not self.classes:
            raise ConfigError("the ontology has no classes: give at least one --prompt or an --ontology file")
        seen_names: set[str] = set()
        seen_prompts: dict[str, str] = {}
        for cls in self.classes:
            if cls.name in seen_names:
                raise ConfigError(f"class {cls.name!r} is defined twice")
            seen_names.add(cls.name)
            if not cls.prompts and not cls.exemplars_of(negative=False):
                raise ConfigError(f"class {cls.name!r} has no prompts (and no exemplars)")
            for prompt in cls.prompts:
                other = seen_prompts.get(prompt.lower())
                if other is not None and other != cls.name:
                    raise ConfigError(f"prompt {prompt!r} is used by both {other!r} and {cls.name!r}")
                seen_prompts[prompt.lower()] = cls.name
            own = {p.lower() for p in cls.prompts}
            clash = [n for n in cls.negatives if n.lower() in own]
            if clash:
                raise ConfigError(f"class {cls.name!r} has {clash[0]!r} as a prompt and as a negative")
            if cls.threshold is not None and not 0.0 <= cls.threshold <= 1.0:
                raise ConfigError(f"threshold of class {cls.name!r} must be in [0, 1], got {cls.threshold}")

    @classmethod
    def from_classes(cls, classes, base: Path | None = None) -> "Ontology":
        """``base``: the folder relative exemplar image paths start from."""
        built = []
        for item in classes:
            if isinstance(item, OntologyClass):
                built.append(item)
                continue
            if isinstance(item, str):
                item = {"name": item}
            if not isinstance(item, dict) or "name" not in item:
                raise ConfigError(f"each class needs a 'name', got {item!r}")
            unknown = set(item) - {"name", "prompts", "threshold", "negatives", "exemplars"}
            if unknown:
                raise ConfigError(f"class {item['name']!r} has unknown keys: {', '.join(sorted(unknown))}")
            name = _clean(item["name"], "a class name")
            exemplars = item.get("exemplars") or []
            if not isinstance(exemplars, list):
                raise ConfigError(f"'exemplars' of class {name!r} must be a list, got {exemplars!r}")
            exemplars = tuple(exemplar_from_dict(e, name, base) for e in exemplars)
            prompts = item.get("prompts")
            if not prompts and not any(not e.negative for e in exemplars):
                prompts = [name]  # a bare class name is its own prompt
            prompts = _texts(prompts or [], f"a prompt of class {name!r}")
            negatives = _texts(item.get("negatives") or [], f"a negative of class {name!r}")
            threshold = item.get("threshold")
            if threshold is not None:
                try:
                    threshold = float(threshold)
                except (TypeError, ValueError):
                    raise ConfigError(f"threshold of class {name!r} is not a number: {threshold!r}") from None
            built.append(OntologyClass(name, prompts, threshold, negatives, exemplars))
        return cls(tuple(built))

    @classmethod
    def from_prompts(cls, specs: list[str] | tuple[str, ...]) -> "Ontology":
        """Parse CLI-style specs: ``"person"``, ``"car=car,automobile,van"``, ``"car=car;not=toy car"``."""
        classes = []
        for spec in specs:
            head, *extras = spec.split(";")
            name, sep, rest = head.partition("=")
            if sep:
                prompts = [p for p in rest.split(",") if p.strip()]
                if not prompts:
                    raise ConfigError(f"--prompt {spec!r} names class {name.strip()!r} but no prompts after '='")
            else:
                prompts = [name]
            negatives = []
            for extra in extras:
                key, sep, rest = extra.partition("=")
                if key.strip() != NEGATIVE_SPEC or not sep or not rest.strip():
                    raise ConfigError(f"--prompt {spec!r}: after ';' write {NEGATIVE_SPEC}=negative,prompts")
                negatives += [p for p in rest.split(",") if p.strip()]
            classes.append({"name": name, "prompts": prompts, "negatives": negatives})
        return cls.from_classes(classes)

    @classmethod
    def from_file(cls, path: str | Path) -> "Ontology":
        """Load YAML or JSON: ``{classes: [...]}``, a list of classes, or ``{name: prompts}``."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read ontology file {path}: {exc.strerror or exc}") from None
        import yaml

        try:
            data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:  # json's errors are ValueErrors, yaml's are not
            kind = path.suffix.lstrip(".").upper() or "YAML"
            raise ConfigError(f"ontology file {path} is not valid {kind}: {exc}") from None
        return cls.from_data(data, source=str(path), base=path.parent)

    @classmethod
    def from_data(cls, data, source: str = "ontology", base: Path | None = None) -> "Ontology":
        if isinstance(data, dict) and "classes" in data:
            data = data["classes"]
        if isinstance(data, dict):
            items = []
            for name, value in data.items():
                if isinstance(value, dict):
                    items.append({"name": name, **value})
                else:
                    items.append({"name": name, "prompts": value})
            data = items
        if not isinstance(data, list):
            raise ConfigError(f"{source}: expected a list of classes or a 'classes:' key")
        return cls.from_classes(data, base)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def queries(self) -> list[str]:
        """All prompts, flattened in class order: the text queries sent to the detector."""
        return [p for c in self.classes for p in c.prompts]

    @cached_property
    def query_class_ids(self) -> np.ndarray:
        """(Q,) int64: the class index of each query."""
        return _frozen(np.array([i for i, c in enumerate(self.classes) for _ in c.prompts], dtype=np.int64))

    @property
    def negative_queries(self) -> list[str]:
        """All negative prompts, flattened in class order."""
        return [n for c in self.classes for n in c.negatives]

    @cached_property
    def negative_query_class_ids(self) -> np.ndarray:
        """(Qn,) int64: the class index of each negative query."""
        return _frozen(np.array([i for i, c in enumerate(self.classes) for _ in c.negatives], dtype=np.int64))

    @property
    def has_exemplars(self) -> bool:
        return any(c.exemplars for c in self.classes)

    def exemplar_class_ids(self, negative: bool) -> np.ndarray:
        """(E,) int64: the classes with (negative) exemplars, in class order; one score column each."""
        return np.array([i for i, c in enumerate(self.classes) if c.exemplars_of(negative)], dtype=np.int64)

    @cached_property
    def positive_class_ids(self) -> np.ndarray:
        """(Q + E,) int64: the class of each positive score column (``queries``, then exemplars)."""
        return _frozen(np.concatenate([self.query_class_ids, self.exemplar_class_ids(negative=False)]))

    @cached_property
    def negative_class_ids(self) -> np.ndarray:
        """(Qn + En,) int64: the class of each negative score column (``negative_queries``, then
        negative exemplars)."""
        return _frozen(np.concatenate([self.negative_query_class_ids, self.exemplar_class_ids(negative=True)]))

    def thresholds(self, default: float) -> np.ndarray:
        """(C,) float32: each class's threshold, ``default`` where the class sets none."""
        # Post-processing asks once per image: remembered for the last few defaults.
        known = self.__dict__.setdefault("_thresholds", {})
        if default not in known:
            if len(known) >= _THRESHOLDS_KEPT:
                known.clear()
            known[default] = _frozen(np.array([default if c.threshold is None else c.threshold
                                               for c in self.classes], dtype=np.float32))
        return known[default]

    def with_thresholds(self, thresholds: dict[str, float]) -> "Ontology":
        return Ontology(tuple(replace(c, threshold=thresholds.get(c.name, c.threshold)) for c in self.classes))

    def to_dict(self) -> dict:
        return {"classes": [c.to_dict() for c in self.classes]}


def load_ontology(prompts=(), ontology_file: str | Path | None = None,
                  exemplars_file: str | Path | None = None) -> Ontology:
    """The classes a command is given: ``--prompt`` specs (``Ontology.from_prompts``) or an
    ``--ontology`` file, not both, plus an ``--exemplars`` file merged in (``add_exemplars``)."""
    if prompts and ontology_file:
        raise ConfigError("give classes with --prompt (repeatable) or --ontology FILE, not both")
    if not (prompts or ontology_file or exemplars_file):
        raise ConfigError("give classes with --prompt (repeatable), --ontology FILE or --exemplars FILE")
    ontology = Ontology.from_file(ontology_file) if ontology_file else Ontology.from_prompts(prompts) if prompts else None
    return add_exemplars(ontology, exemplars_file) if exemplars_file else ontology


def add_exemplars(ontology: Ontology | None, path: str | Path) -> Ontology:
    """Merge an exemplars file (JSON: a list of ``{image, box, class, negative?}``, image paths
    relative to the file) into ``ontology``: each exemplar joins its class; a class the ontology
    lacks is added after the others, found by its exemplars alone."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read exemplars file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"exemplars file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, list) or not data:
        raise ConfigError(f"exemplars file {path}: expected a non-empty list of {{image, box, class}}")
    added: dict[str, list[Exemplar]] = {}
    for item in data:
        if not isinstance(item, dict) or "class" not in item:
            raise ConfigError(f"exemplars file {path}: each entry needs a 'class', got {item!r}")
        name = _clean(item["class"], "a class name")
        added.setdefault(name, []).append(exemplar_from_dict(item, name, path.parent))
    return with_exemplars(ontology, added)


def with_exemplars(ontology: Ontology | None, added: dict[str, list[Exemplar]]) -> Ontology:
    """``ontology`` (None: no classes yet) with each class's ``added`` exemplars after its own; a
    class it lacks is added after the others, in the order of ``added``, found by its exemplars alone."""
    classes = list(ontology.classes) if ontology is not None else []
    names = {c.name for c in classes}
    merged = [replace(c, exemplars=c.exemplars + tuple(added.get(c.name, ()))) for c in classes]
    merged += [OntologyClass(name, (), exemplars=tuple(exemplars)) for name, exemplars in added.items()
               if name not in names]
    return Ontology(tuple(merged))
