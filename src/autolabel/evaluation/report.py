"""Evaluation outputs: ``report.html`` (self-contained), ``metrics.json`` and the calibrated ontology.

The HTML report holds the metrics table and, per class, a precision/recall curve (with the max-F1
and target-precision thresholds marked) and a histogram of prediction scores split into correct and
wrong predictions. Figures are drawn with matplotlib's Agg canvas (no pyplot, no global backend
change) and embedded as base64 PNG, so the file opens offline and can be mailed around.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from autolabel.evaluation.result import ClassResult, EvalResult
from autolabel.export.package import DirectorySink, json_bytes
from autolabel.ontology import Ontology

REPORT_FILE = "report.html"
METRICS_FILE = "metrics.json"
THRESHOLDS_FILE = "thresholds.yaml"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr:last-child td { font-weight: bold; }
.note { color: #555; }
section { margin-top: 2em; }
"""


def class_figure_png(result: ClassResult, target_precision: float | None, dpi: int = 80) -> bytes:
    """PNG bytes: the class's precision/recall curve (left) and score histogram (right)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6))
    FigureCanvasAgg(fig)
    pr, hist = fig.subplots(1, 2)
    curve = result.curve
    if len(curve.recall):
        pr.step([0.0, *curve.recall], [curve.precision[0], *curve.precision], where="post", color="tab:blue")
    if result.best_f1 is not None:
        b = result.best_f1
        pr.plot([b.recall], [b.precision], "o", color="tab:red", label=f"max F1 {b.f1:.2f} @ {b.threshold:.3f}")
    if result.at_precision is not None:
        a = result.at_precision
        pr.plot([a.recall], [a.precision], "s", color="tab:green", label=f"P>={target_precision:g} @ {a.threshold:.3f}")
    pr.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="recall", ylabel="precision",
           title=f"{result.name}: precision / recall (AP50 {_fmt(result.ap50)})")
    pr.grid(alpha=0.3)
    if result.best_f1 is not None or result.at_precision is not None:
        pr.legend(loc="lower left", fontsize=8)
    edges = np.linspace(0.0, 1.0, 21)
    tp, _ = np.histogram(result.matches.scores[result.matches.tp], edges)
    fp, _ = np.histogram(result.matches.scores[~result.matches.tp], edges)
    width = edges[1] - edges[0]
    hist.bar(edges[:-1], tp, width=width, align="edge", color="tab:green", alpha=0.8, label="correct")
    hist.bar(edges[:-1], fp, width=width, align="edge", bottom=tp, color="tab:red", alpha=0.6, label="wrong")
    if result.best_f1 is not None:
        hist.axvline(result.best_f1.threshold, color="k", linestyle="--", linewidth=1, label="max-F1 threshold")
    hist.set(xlim=(0, 1), xlabel="score", ylabel="predictions", title="score histogram")
    hist.legend(loc="upper left", fontsize=8)
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.14, top=0.9, wspace=0.18)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else html.escape(str(value))


def render_html(result: EvalResult) -> str:
    """The report as one HTML string (figures inline)."""
    rows = result.table_rows()
    columns = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(row[c])}</td>" for c in columns) + "</tr>" for row in rows)
    notes = [f"{result.images} images evaluated; IoU {result.iou:g} for precision, recall and thresholds; "
             "AP is COCO's (IoU 0.50:0.95, at most 100 predictions per image)."]
    if result.segm_map is not None:
        notes.append(f"Mask mAP@[.5:.95]: {result.segm_map:.3f}.")
    if result.missing:
        notes.append(f"{len(result.missing)} ground-truth images are not in the run and were not evaluated.")
    if result.gt_only_classes:
        notes.append("Ground-truth classes the run does not have (not evaluated): "
                     + html.escape(", ".join(result.gt_only_classes)) + ".")
    if result.run_only_classes:
        notes.append("Run classes absent from the ground truth (not evaluated): "
                     + html.escape(", ".join(result.run_only_classes)) + ".")
    sections = []
    for c in result.classes:
        png = base64.b64encode(class_figure_png(c, result.target_precision)).decode("ascii")
        sections.append(f'<section><h3>{html.escape(c.name)}</h3>'
                        f'<img alt="{html.escape(c.name)} curves" src="data:image/png;base64,{png}"></section>')
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>autolabel evaluation</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>Evaluation of {html.escape(result.run)}</h1>"
        f"<p>Ground truth: {html.escape(result.ground_truth)}</p>"
        f"<p>mAP@[.5:.95] <b>{_fmt(result.map)}</b> &middot; AP50 <b>{_fmt(result.ap50)}</b> &middot; "
        f"AP75 <b>{_fmt(result.ap75)}</b></p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        + "".join(f'<p class="note">{n}</p>' for n in notes)
        + "".join(sections)
        + "</body></html>\n"
    )


def thresholds_yaml(result: EvalResult, ontology: Ontology, kind: str = "f1") -> str:
    """The calibrated ontology as YAML (``label --ontology`` and ``export --thresholds`` read it)."""
    import yaml

    calibrated = result.calibrated_ontology(ontology, kind)
    rule = (f"the lowest score threshold reaching precision {result.target_precision:g} (max F1 where it "
            "cannot be reached)" if kind == "precision" else "the score threshold maximising F1")
    header = (f"# Per-class thresholds calibrated by `autolabel eval` against {result.ground_truth}\n"
              f"# ({result.images} images, IoU {result.iou:g}): {rule}.\n")
    uncalibrated = [c.name for c in result.classes if c.name not in result.thresholds(kind)]
    if uncalibrated:
        header += f"# Not calibrated (no correct prediction): {', '.join(uncalibrated)}.\n"
    return header + yaml.safe_dump(calibrated.to_dict(), sort_keys=False, allow_unicode=True)


def write_report(result: EvalResult, out_dir: str | Path, ontology: Ontology | None = None,
                 kind: str = "f1") -> dict[str, Path]:
    """Write ``report.html``, ``metrics.json`` and (with ``ontology``) ``thresholds.yaml`` atomically."""
    sink = DirectorySink(Path(out_dir))
    sink.write(METRICS_FILE, json_bytes(result.to_dict(), indent=1))
    written = {"metrics": sink.root / METRICS_FILE}
    if ontology is not None:
        sink.write(THRESHOLDS_FILE, thresholds_yaml(result, ontology, kind).encode("utf-8"))
        written["thresholds"] = sink.root / THRESHOLDS_FILE
    sink.write(REPORT_FILE, render_html(result).encode("utf-8"))
    written["report"] = sink.root / REPORT_FILE
    return written
