"""Comparison outputs: ``report.md`` and ``report.html`` (the same tables; PR curves as PNG files
for the markdown, inline for the self-contained HTML), ``comparison.json``, and the winner's
calibrated ontology ``best_ontology.yaml`` (``autolabel label --ontology`` reads it)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from autolabel.compare.run import Comparison, ModelResult
from autolabel.evaluation.report import thresholds_yaml
from autolabel.export.package import DirectorySink, json_bytes

MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"
JSON_FILE = "comparison.json"
ONTOLOGY_FILE = "best_ontology.yaml"
CURVES_DIR = "pr_curves"


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def overview_rows(comparison: Comparison) -> list[dict[str, str]]:
    """One row per model, in the order given, the best marked: overall metrics and speed."""
    best = comparison.best()
    return [{"model": m.model + (" (best)" if m is best else ""), "mAP": _fmt(m.result.map),
             "AP50": _fmt(m.result.ap50), "mean F1 @ calibrated": _fmt(m.mean_best_f1),
             "images/s": _fmt(m.images_per_second, 2), "run": str(m.run_dir)} for m in comparison.models]


def class_rows(comparison: Comparison) -> list[dict[str, str]]:
    """One row per class: each model's AP / AP50 / F1 at its calibrated threshold, and the best."""
    best = comparison.best_per_class()
    rows = []
    for name in comparison.classes:
        row = {"class": name}
        for m in comparison.models:
            c = m.for_class(name)
            point = c.best_f1 if c else None
            row[m.model] = (f"AP {_fmt(c.ap if c else None)} · AP50 {_fmt(c.ap50 if c else None)} · "
                            f"F1 {_fmt(point.f1 if point else None)} @ {_fmt(point.threshold if point else None)}")
        row["best"] = best[name].model if name in best else "-"
        rows.append(row)
    return rows


def pr_overlay_png(name: str, models: list[ModelResult], dpi: int = 80) -> bytes:
    """PNG bytes: every model's precision/recall curve of class ``name`` on one plot, each with
    its calibrated (max-F1) point."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for k, m in enumerate(models):
        c = m.for_class(name)
        color = f"C{k % 10}"
        if c is None or not len(c.curve.recall):
            ax.plot([], [], color=color, label=f"{m.model} (no predictions)")
            continue
        curve = c.curve
        ax.step([0.0, *curve.recall], [curve.precision[0], *curve.precision], where="post", color=color,
                label=f"{m.model} (AP50 {_fmt(c.ap50)})")
        if c.best_f1 is not None:
            ax.plot([c.best_f1.recall], [c.best_f1.precision], "o", color=color)
    ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=f"{name}: precision / recall")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=7)
    fig.subplots_adjust(left=0.11, right=0.98, bottom=0.12, top=0.92)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def _markdown_table(rows: list[dict[str, str]]) -> str:
    columns = list(rows[0])
    cell = lambda v: str(v).replace("|", "\\|")  # noqa: E731 - one-line escape
    lines = ["| " + " | ".join(map(cell, columns)) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(rows: list[dict[str, str]]) -> str:
    columns = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r[c]))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _summary_lines(comparison: Comparison) -> list[str]:
    best = comparison.best()
    m = best.result
    lines = [f"Ground truth: {comparison.ground_truth} ({m.images} images, IoU {m.iou:g} for F1 and thresholds; "
             "AP is COCO's, IoU 0.50:0.95).",
             f"Best overall: {best.model} (mAP {_fmt(m.map)}, AP50 {_fmt(m.ap50)}).",
             f"Its calibrated thresholds: {ONTOLOGY_FILE} — relabel with "
             f"`autolabel label IMAGES --out RUN --model {best.model} --ontology {ONTOLOGY_FILE}`."]
    return lines


def render_markdown(comparison: Comparison, curve_files: dict[str, str]) -> str:
    parts = ["# Model comparison", "", *_summary_lines(comparison), "", "## Overall", "",
             _markdown_table(overview_rows(comparison)), "", "## Per class", "",
             "F1 at each model's calibrated (max-F1) threshold, shown after @.", "",
             _markdown_table(class_rows(comparison)), "", "## Precision / recall", ""]
    parts += [f"![{name}]({curve_files[name]})" for name in comparison.classes]
    return "\n".join(parts) + "\n"


def render_html(comparison: Comparison, curves: dict[str, bytes]) -> str:
    style = ("body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}"
             "th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}")
    images = "".join(f'<img alt="{html.escape(n)}" src="data:image/png;base64,{base64.b64encode(curves[n]).decode()}">'
                     for n in comparison.classes)
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>autolabel model comparison</title>"
            f"<style>{style}</style></head><body><h1>Model comparison</h1>"
            + "".join(f"<p>{html.escape(line)}</p>" for line in _summary_lines(comparison))
            + "<h2>Overall</h2>" + _html_table(overview_rows(comparison))
            + "<h2>Per class</h2><p>F1 at each model's calibrated (max-F1) threshold, shown after @.</p>"
            + _html_table(class_rows(comparison)) + "<h2>Precision / recall</h2>" + images + "</body></html>\n")


def comparison_dict(comparison: Comparison) -> dict:
    """JSON-ready: each model's evaluation summary and speed, the best overall and per class."""
    return {
        "ground_truth": comparison.ground_truth,
        "best": comparison.best().model,
        "best_per_class": {name: m.model for name, m in comparison.best_per_class().items()},
        "models": [{"model": m.model, "run": str(m.run_dir), "images_per_second": m.images_per_second,
                    "mean_best_f1": m.mean_best_f1, "evaluation": m.result.to_dict()} for m in comparison.models],
    }


def write_comparison(comparison: Comparison, out_dir: str | Path) -> dict[str, Path]:
    """Write the reports, ``comparison.json`` and the winner's calibrated ontology (each atomically)."""
    sink = DirectorySink(Path(out_dir))
    curves = {name: pr_overlay_png(name, comparison.models) for name in comparison.classes}
    curve_files = {name: f"{CURVES_DIR}/{k + 1:02d}.png" for k, name in enumerate(comparison.classes)}
    for name, png in curves.items():
        sink.write(curve_files[name], png)
    best = comparison.best()
    header = f"# Best model of `autolabel compare`: {best.model}\n"
    sink.write(ONTOLOGY_FILE, (header + thresholds_yaml(best.result, comparison.ontology)).encode("utf-8"))
    sink.write(JSON_FILE, json_bytes(comparison_dict(comparison), indent=1))
    sink.write(MARKDOWN_FILE, render_markdown(comparison, curve_files).encode("utf-8"))
    sink.write(HTML_FILE, render_html(comparison, curves).encode("utf-8"))
    return {kind: sink.root / name for kind, name in
            (("ontology", ONTOLOGY_FILE), ("json", JSON_FILE), ("markdown", MARKDOWN_FILE), ("html", HTML_FILE))}
