"""Compare models on hand-labelled ground truth: each labels the same images (its own resumable run),
is evaluated and calibrated, and a report names the best overall and per class.

    from autolabel.compare import compare_models, write_comparison

    comparison = compare_models("gt/instances.json", ["google/owlv2-base-patch16-ensemble",
                                "google/owlvit-base-patch32"], "compare/", gt_images="gt/images")
    print(comparison.best().model)
    write_comparison(comparison, "compare/")   # report.md, report.html, best_ontology.yaml
"""

from autolabel.compare.report import write_comparison
from autolabel.compare.run import Comparison, ModelResult, compare_models

__all__ = ["Comparison", "ModelResult", "compare_models", "write_comparison"]
