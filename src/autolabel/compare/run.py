"""Label one ground-truth set with several models and evaluate each: the data of a comparison.

Each model labels the ground-truth images into its own run folder under ``out_dir/runs`` (the
resumable ``labeling.label_into_store`` loop, so an interrupted comparison continues where it
stopped), at a low score threshold so that calibration sees the whole precision/recall curve; then
``evaluation.evaluate_run`` scores it and calibrates per-class thresholds.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from autolabel.errors import ConfigError
from autolabel.evaluation import ClassResult, EvalResult, evaluate_run
from autolabel.evaluation.evaluate import DEFAULT_IOU
from autolabel.evaluation.sources import LabelSet, from_path
from autolabel.models.registry import family_for
from autolabel.ontology import Ontology, OntologyClass
from autolabel.pipeline import DEFAULT_BATCH_SIZE, DetectConfig, Labeler

#: Labelling threshold of a comparison: low, so calibration can pick any higher one.
DEFAULT_COMPARE_THRESHOLD = 0.05
RUNS_DIR = "runs"
SPEED_FILE = "labelling_speed.json"


@dataclass(frozen=True)
class ModelResult:
    """One model's evaluation; ``images_per_second`` over every labelling session of its run
    (None when no image was labelled with timing, e.g. a run made outside ``compare``)."""

    model: str
    run_dir: Path
    result: EvalResult
    images_per_second: float | None

    def for_class(self, name: str) -> ClassResult | None:
        return next((c for c in self.result.classes if c.name == name), None)

    @property
    def mean_best_f1(self) -> float:
        """Mean over classes of F1 at each class's calibrated (max-F1) threshold; 0 for a class
        without a correct prediction."""
        values = [c.best_f1.f1 if c.best_f1 else 0.0 for c in self.result.classes if c.gt]
        return sum(values) / len(values) if values else 0.0


def _rank(value) -> float:
    return -1.0 if value is None else float(value)


@dataclass(frozen=True)
class Comparison:
    """Several models evaluated on the same ground truth with the same ontology."""

    ground_truth: str
    ontology: Ontology
    models: list[ModelResult]

    def best(self) -> ModelResult:
        """The best model overall: highest mAP@[.5:.95], then AP50, then mean calibrated F1, then speed."""
        return max(self.models, key=lambda m: (_rank(m.result.map), _rank(m.result.ap50), m.mean_best_f1,
                                               _rank(m.images_per_second)))

    def best_per_class(self) -> dict[str, ModelResult]:
        """Per evaluated class, the model with the highest AP (then AP50, then calibrated F1);
        classes without ground-truth instances are left out."""
        out = {}
        for name in self.classes:
            scored = [(m, m.for_class(name)) for m in self.models]
            scored = [(m, c) for m, c in scored if c is not None and c.gt]
            if scored:
                out[name] = max(scored, key=lambda mc: (_rank(mc[1].ap), _rank(mc[1].ap50),
                                                        mc[1].best_f1.f1 if mc[1].best_f1 else 0.0))[0]
        return out

    @property
    def classes(self) -> list[str]:
        """Evaluated class names, in ontology order."""
        evaluated = {c.name for m in self.models for c in m.result.classes}
        return [n for n in self.ontology.names if n in evaluated]


def run_folder_name(model: str) -> str:
    """A readable, collision-free folder name for a checkpoint name (hub id or path)."""
    local = Path(model)
    readable = local.name if local.exists() else model.strip("/").replace("/", "--")
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", readable).strip("-.")[-60:] or "model"
    return f"{readable}-{hashlib.sha1(model.encode('utf-8')).hexdigest()[:6]}"


def ontology_for(truth: LabelSet, ontology: Ontology | None) -> Ontology:
    """The given ontology, or one class per ground-truth class, prompted by its name."""
    if ontology is None:
        return Ontology(tuple(OntologyClass(name, (name,)) for name in truth.classes))
    if not set(ontology.names) & set(truth.classes):
        raise ConfigError(f"the ontology shares no class name with the ground truth ({', '.join(truth.classes)})")
    return ontology


def compare_models(
    gt: str | Path,
    models: list[str],
    out_dir: str | Path,
    *,
    gt_images: str | Path | None = None,
    ontology: Ontology | None = None,
    sam_model: str | None = None,
    config: DetectConfig | None = None,
    device: str = "auto",
    precision: str = "auto",
    exact: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    iou: float = DEFAULT_IOU,
    target_precision: float | None = None,
    on_model: Callable[[int, str], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Comparison:
    """Label the images of ``gt`` (a COCO ``.json`` with ``gt_images``, a YOLO ``data.yaml`` or a
    run folder) with each of ``models`` and evaluate each. ``sam_model``: segment mode, masks by
    that segmenter for every model. ``on_model(i, model)`` before each model; ``on_total`` and
    ``on_progress`` as in ``label_into_store``."""
    from autolabel.labeling import label_into_store
    from autolabel.store import open_store

    if not models:
        raise ConfigError("give at least one model to compare (--model, repeatable)")
    if len(set(models)) != len(models):
        raise ConfigError("a model is listed twice")
    for model in models:  # a wrong checkpoint fails now, not after the first models have labelled
        family_for(model, "detector")
    if sam_model:
        family_for(sam_model, "segmenter")
    truth = from_path(gt, gt_images)
    ontology = ontology_for(truth, ontology)
    config = config or DetectConfig(threshold=DEFAULT_COMPARE_THRESHOLD)
    paths = [str(Path(im.path).resolve()) for im in truth.images]
    results = []
    for index, model in enumerate(models):
        if on_model:
            on_model(index, model)
        run_dir = Path(out_dir) / RUNS_DIR / run_folder_name(model)
        labeler = Labeler(ontology, model=model, sam_model=sam_model, mode="segment" if sam_model else "detect",
                          config=config, device=device, precision=precision, exact=exact)
        with open_store(run_dir) as store:
            store.bind_config(labeler.run_config())  # refuses a folder made with other options
            if len(store.done_among(paths)) < len(paths):
                _load_models(labeler)  # before the clock starts: images/s is the labelling speed
            summary = label_into_store(labeler, paths, store, batch_size=batch_size, workers=workers,
                                       on_total=on_total, on_progress=on_progress)
            speed = _record_speed(run_dir, summary.done, summary.seconds)
            result = evaluate_run(store, truth, iou=iou, target_precision=target_precision)
        del labeler  # frees the models before the next one loads
        results.append(ModelResult(model, run_dir, result, speed))
    return Comparison(truth.description, ontology, results)


def _load_models(labeler: Labeler) -> None:
    labeler.detector
    if labeler.mode == "segment":
        labeler.segmenter


def _record_speed(run_dir: Path, images: int, seconds: float) -> float | None:
    """Add a labelling session to the run's speed record; the run's images per second so far."""
    path = run_dir / SPEED_FILE
    record = json.loads(path.read_text()) if path.exists() else {"images": 0, "seconds": 0.0}
    if images:
        record = {"images": record["images"] + images, "seconds": record["seconds"] + seconds}
        path.write_text(json.dumps(record))
    return record["images"] / record["seconds"] if record["seconds"] > 0 else None
