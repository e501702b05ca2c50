"""Classes and the text prompts that find them.

``--prompt person`` makes a class ``person`` found by the prompt "person";
``--prompt "car=car,automobile,van"`` makes a class ``car`` found by any of three prompts. An ontology
file (YAML or JSON) can also carry a per-class score threshold::

    classes:
      - name: car
        prompts: [car, automobile, van]
        threshold: 0.2
      - name: person

Detections carry the class; the prompt that matched is kept alongside.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autolabel.errors import ConfigError


@dataclass(frozen=True)
class OntologyClass:
    name: str
    prompts: tuple[str, ...]
    threshold: float | None = None

    def to_dict(self) -> dict:
        out: dict = {"name": self.name, "prompts": list(self.prompts)}
        if self.threshold is not None:
            out["threshold"] = self.threshold
        return out


def _clean(text: str, what: str) -> str:
    if not isinstance(text, str):
        raise ConfigError(f"{what} must be text, got {text!r}")
    cleaned = " ".join(text.split())
    if not cleaned:
        raise ConfigError(f"{what} is empty")
    return cleaned


@dataclass(frozen=True)
class Ontology:
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
            if not cls.prompts:
                raise ConfigError(f"class {cls.name!r} has no prompts")
            for prompt in cls.prompts:
                other = seen_prompts.get(prompt.lower())
                if other is not None and other != cls.name:
                    raise ConfigError(f"prompt {prompt!r} is used by both {other!r} and {cls.name!r}")
                seen_prompts[prompt.lower()] = cls.name
            if cls.threshold is not None and not 0.0 <= cls.threshold <= 1.0:
                raise ConfigError(f"threshold of class {cls.name!r} must be in [0, 1], got {cls.threshold}")

    @classmethod
    def from_classes(cls, classes) -> "Ontology":
        built = []
        for item in classes:
            if isinstance(item, OntologyClass):
                built.append(item)
                continue
            if isinstance(item, str):
                item = {"name": item}
            if not isinstance(item, dict) or "name" not in item:
                raise ConfigError(f"each class needs a 'name', got {item!r}")
            unknown = set(item) - {"name", "prompts", "threshold"}
            if unknown:
                raise ConfigError(f"class {item['name']!r} has unknown keys: {', '.join(sorted(unknown))}")
            name = _clean(item["name"], "a class name")
            prompts = item.get("prompts") or [name]
            if isinstance(prompts, str):
                prompts = prompts.split(",")
            cleaned = tuple(dict.fromkeys(_clean(p, f"a prompt of class {name!r}") for p in prompts))
            threshold = item.get("threshold")
            if threshold is not None:
                try:
                    threshold = float(threshold)
                except (TypeError, ValueError):
                    raise ConfigError(f"threshold of class {name!r} is not a number: {threshold!r}") from None
            built.append(OntologyClass(name, cleaned, threshold))
        return cls(tuple(built))

    @classmethod
    def from_prompts(cls, specs: list[str] | tuple[str, ...]) -> "Ontology":
        """Parse CLI-style specs: ``"person"`` or ``"car=car,automobile,van"``."""
        classes = []
        for spec in specs:
            name, sep, rest = spec.partition("=")
            if sep:
                prompts = [p for p in rest.split(",") if p.strip()]
                if not prompts:
                    raise ConfigError(f"--prompt {spec!r} names class {name.strip()!r} but no prompts after '='")
            else:
                prompts = [name]
            classes.append({"name": name, "prompts": prompts})
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
        return cls.from_data(data, source=str(path))

    @classmethod
    def from_data(cls, data, source: str = "ontology") -> "Ontology":
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
        return cls.from_classes(data)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def queries(self) -> list[str]:
        """All prompts, flattened in class order: the text queries sent to the detector."""
        return [p for c in self.classes for p in c.prompts]

    @property
    def query_class_ids(self) -> np.ndarray:
        """(Q,) int64: the class index of each query."""
        return np.array([i for i, c in enumerate(self.classes) for _ in c.prompts], dtype=np.int64)

    def thresholds(self, default: float) -> np.ndarray:
        """(C,) float32: each class's threshold, ``default`` where the class sets none."""
        return np.array([default if c.threshold is None else c.threshold for c in self.classes], dtype=np.float32)

    def with_thresholds(self, thresholds: dict[str, float]) -> "Ontology":
        return Ontology(tuple(
            OntologyClass(c.name, c.prompts, thresholds.get(c.name, c.threshold)) for c in self.classes
        ))

    def to_dict(self) -> dict:
        return {"classes": [c.to_dict() for c in self.classes]}
