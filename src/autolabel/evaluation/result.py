"""The outcome of an evaluation: overall and per-class metrics, calibrated thresholds, and their
views (UI table rows, the CLI's text table, JSON, a calibrated ontology)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from autolabel.evaluation.calibration import Curve, Matches, OperatingPoint
from autolabel.ontology import Ontology


@dataclass(frozen=True)
class ClassResult:
    """Metrics of one class.

    ap / ap50 / ap75: COCO box AP (None when the ground truth has no instance of the class);
    segm_ap: mask AP when both sides have masks.
    precision / recall / f1: at IoU ``iou`` with every stored prediction kept (precision None
    without predictions, recall None without ground truth).
    best_f1: the threshold maximising F1 and the precision/recall there (None: no correct prediction).
    at_precision: the lowest threshold reaching the target precision (None: not requested or not
    reachable).
    stable_after: how many images (in ``EvalResult.order``) the calibrated threshold needed to stop
    moving by more than 0.05 (None: not stable; ``evaluation.stability`` has the rule).
    """

    name: str
    gt: int
    predictions: int
    ap: float | None
    ap50: float | None
    ap75: float | None
    segm_ap: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    best_f1: OperatingPoint | None
    at_precision: OperatingPoint | None
    matches: Matches = field(repr=False, compare=False)
    curve: Curve = field(repr=False, compare=False)
    stable_after: int | None = None


@dataclass(frozen=True)
class EvalResult:
    """Evaluation of a run against ground truth (see ``autolabel.evaluation.evaluate_run``)."""

    run: str
    ground_truth: str
    images: int  # paired images evaluated
    missing: list[str]  # ground-truth images the run has not labelled (not evaluated)
    classes: list[ClassResult]
    map: float | None
    ap50: float | None
    ap75: float | None
    segm_map: float | None
    iou: float
    target_precision: float | None
    gt_only_classes: list[str]
    run_only_classes: list[str]
    order: str = "review"  # of the images for ``ClassResult.stable_after``: ``review`` or ``path``

    def thresholds(self, kind: str = "f1") -> dict[str, float]:
        """Calibrated thresholds per class: ``f1`` (max F1) or ``precision`` (target precision,
        falling back to max F1 for classes that cannot reach it). Classes without any correct
        prediction get none."""
        out = {}
        for c in self.classes:
            point = c.at_precision if kind == "precision" and c.at_precision is not None else c.best_f1
            if point is not None:
                out[c.name] = point.threshold  # already short: see calibration.pr_curve
        return out

    def calibrated_ontology(self, ontology: Ontology, kind: str = "f1") -> Ontology:
        """``ontology`` with the calibrated thresholds of the evaluated classes (others unchanged)."""
        return ontology.with_thresholds(self.thresholds(kind))

    def table_rows(self) -> list[dict]:
        """One flat dict per class, then ``all``: metrics ready for a table (None where undefined)."""

        def r(x):
            return None if x is None else round(float(x), 4)

        rows = []
        for c in self.classes:
            rows.append({
                "class": c.name, "gt": c.gt, "pred": c.predictions, "AP": r(c.ap), "AP50": r(c.ap50),
                "AP75": r(c.ap75), "P": r(c.precision), "R": r(c.recall), "F1": r(c.f1),
                "F1 thr": r(c.best_f1.threshold) if c.best_f1 else None,
                "best F1": r(c.best_f1.f1) if c.best_f1 else None,
                "P thr": r(c.at_precision.threshold) if c.at_precision else None,
                "R at P": r(c.at_precision.recall) if c.at_precision else None,
            })
        gt = sum(c.gt for c in self.classes)
        pred = sum(c.predictions for c in self.classes)
        tp = sum(int(c.matches.tp.sum()) for c in self.classes)
        p = tp / pred if pred else 0.0
        rec = tp / gt if gt else 0.0
        rows.append({"class": "all", "gt": gt, "pred": pred, "AP": r(self.map), "AP50": r(self.ap50),
                     "AP75": r(self.ap75), "P": r(p), "R": r(rec), "F1": r(2 * p * rec / (p + rec) if p + rec else 0.0),
                     "F1 thr": None, "best F1": None, "P thr": None, "R at P": None})
        return rows

    def format_table(self) -> str:
        """A fixed-width text table of :meth:`table_rows` (``-`` where undefined)."""
        rows = self.table_rows()
        columns = [k for k in rows[0] if self.target_precision is not None or k not in ("P thr", "R at P")]
        cells = [[("-" if row[k] is None else f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k]))
                  for k in columns] for row in rows]
        widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(columns)]
        return "\n".join("  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths)))
                         for row in [columns, *cells])

    def to_dict(self) -> dict:
        """JSON-ready summary (no curves)."""

        def point(p: OperatingPoint | None):
            return None if p is None else asdict(p)

        return {
            "run": self.run, "ground_truth": self.ground_truth, "images": self.images, "missing": self.missing,
            "iou": self.iou, "target_precision": self.target_precision,
            "map": self.map, "ap50": self.ap50, "ap75": self.ap75, "segm_map": self.segm_map,
            "gt_only_classes": self.gt_only_classes, "run_only_classes": self.run_only_classes, "order": self.order,
            "classes": [{"name": c.name, "gt": c.gt, "predictions": c.predictions, "ap": c.ap, "ap50": c.ap50,
                         "ap75": c.ap75, "segm_ap": c.segm_ap, "precision": c.precision, "recall": c.recall,
                         "f1": c.f1, "best_f1": point(c.best_f1), "at_precision": point(c.at_precision),
                         "stable_after": c.stable_after}
                        for c in self.classes],
            "thresholds": {"f1": self.thresholds("f1"),
                           **({"precision": self.thresholds("precision")} if self.target_precision else {})},
        }
