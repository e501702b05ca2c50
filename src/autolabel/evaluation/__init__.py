"""Evaluate a run against ground truth and calibrate per-class score thresholds.

    from autolabel.evaluation import evaluate_run, write_report
    from autolabel.store import open_store

    with open_store("runs/street", create=False) as store:
        result = evaluate_run(store, "gt/instances_val.json", target_precision=0.9)
        print(result.format_table())          # or result.table_rows() for a UI table
        write_report(result, "runs/street/eval", store.ontology)
        better = result.calibrated_ontology(store.ontology)   # thresholds for `label` / `export`

Metrics: COCO mAP@[.5:.95], AP50, AP75 (pycocotools), per-class AP, and precision / recall / F1 at
one IoU (0.5 by default) with every stored label kept and at the calibrated thresholds.
"""

from autolabel.evaluation.evaluate import evaluate_run
from autolabel.evaluation.report import write_report
from autolabel.evaluation.result import ClassResult, EvalResult

__all__ = ["ClassResult", "EvalResult", "evaluate_run", "write_report"]
