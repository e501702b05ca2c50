"""Options that several commands share (``label``, ``relabel``): how classes are given and how raw
detections are filtered, with one help text each."""

from __future__ import annotations

import click

from autolabel.pipeline import DetectConfig


def _apply(command, options):
    for option in reversed(options):
        command = option(command)
    return command


def class_options(command):
    """``--prompt`` / ``--ontology`` / ``--exemplars`` (``ontology.load_ontology`` reads them)."""
    return _apply(command, [
        click.option("--prompt", "prompts", multiple=True,
                     help='Class and prompts: "person", "car=car,automobile,van" or "car=car;not=toy car" '
                          "(not=: negative prompts). Repeatable."),
        click.option("--ontology", "ontology_file", type=click.Path(exists=True, dir_okay=False),
                     help="YAML/JSON ontology (classes, prompts, negatives, exemplars, per-class thresholds)."),
        click.option("--exemplars", "exemplars_file", type=click.Path(exists=True, dir_okay=False),
                     help="JSON list of {image, box: [x0,y0,x1,y1], class, negative?}: example boxes that define "
                          "or refine classes (OWLv2, OWL-ViT, SAM 3); image paths relative to the file."),
    ])


def filter_options(command):
    """Threshold, NMS and area limits (``detect_config`` turns them into a ``DetectConfig``)."""
    return _apply(command, [
        click.option("--threshold", type=float, default=None,
                     help=f"Score threshold (default {DetectConfig.threshold}); per-class thresholds in --ontology win."),
        click.option("--nms-iou", type=float, default=None, help=f"Per-class NMS IoU (default {DetectConfig.nms_iou})."),
        click.option("--no-nms", is_flag=True, help="Disable per-class NMS."),
        click.option("--agnostic-nms", "agnostic_nms_iou", type=float, default=None,
                     help="Also suppress overlaps across classes at this IoU."),
        click.option("--min-area", type=float, default=DetectConfig.min_area_frac, show_default=True,
                     help="Drop boxes smaller than this fraction of the image area."),
        click.option("--max-area", type=float, default=DetectConfig.max_area_frac, show_default=True,
                     help="Drop boxes larger than this fraction of the image area."),
    ])


def detect_config(settings, no_nms: bool, agnostic_nms_iou: float | None, min_area: float,
                  max_area: float) -> DetectConfig:
    """The ``filter_options`` as a ``DetectConfig`` (threshold and NMS IoU through the settings)."""
    return DetectConfig(threshold=settings.threshold, nms_iou=None if no_nms else settings.nms_iou,
                        agnostic_nms_iou=agnostic_nms_iou, min_area_frac=min_area, max_area_frac=max_area)
