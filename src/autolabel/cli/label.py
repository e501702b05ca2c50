"""``autolabel label``: run OWLv2 (and SAM2) over images into a resumable run folder."""

from __future__ import annotations

import time

import click

from autolabel.cli.errors import handle_errors
from autolabel.pipeline import DEFAULT_BATCH_SIZE, MODES, DetectConfig
from autolabel.settings import DTYPES


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Run folder (created; re-use it to resume).")
@click.option("--prompt", "prompts", multiple=True, help='Class and prompts: "person" or "car=car,automobile,van". Repeatable.')
@click.option("--ontology", "ontology_file", type=click.Path(exists=True, dir_okay=False), help="YAML/JSON ontology (classes, prompts, per-class thresholds).")
@click.option("--mode", type=click.Choice(MODES), default=MODES[0], show_default=True, help="segment adds SAM2 masks.")
@click.option("--model", default=None, help="OWLv2 checkpoint: hub id or local dir [env AUTOLABEL_MODEL].")
@click.option("--sam-model", default=None, help="SAM2 checkpoint for --mode segment [env AUTOLABEL_SAM_MODEL].")
@click.option("--threshold", type=float, default=None, help=f"Score threshold (default {DetectConfig.threshold}); per-class thresholds in --ontology win.")
@click.option("--nms-iou", type=float, default=None, help=f"Per-class NMS IoU (default {DetectConfig.nms_iou}).")
@click.option("--no-nms", is_flag=True, help="Disable per-class NMS.")
@click.option("--agnostic-nms", "agnostic_nms_iou", type=float, default=None, help="Also suppress overlaps across classes at this IoU.")
@click.option("--min-area", type=float, default=DetectConfig.min_area_frac, show_default=True, help="Drop boxes smaller than this fraction of the image area.")
@click.option("--max-area", type=float, default=DetectConfig.max_area_frac, show_default=True, help="Drop boxes larger than this fraction of the image area.")
@click.option("--batch-size", type=int, default=None, help=f"Images per forward pass (default {DEFAULT_BATCH_SIZE}).")
@click.option("--device", default=None, help="auto, cpu, cuda, cuda:N or mps [env AUTOLABEL_DEVICE].")
@click.option("--dtype", type=click.Choice(DTYPES), default=None, help="Model dtype (auto: fp16 on CUDA, fp32 elsewhere).")
@click.option("--max-pixels", type=int, default=None, help="Refuse images with more pixels than this (decompression-bomb guard).")
@click.option("--exact", is_flag=True, help="Decode every image at full size and use the stock processors (slower; the default draft-decodes JPEGs and preprocesses in torch, see BENCHMARKS.md).")
@click.option("--compile", "compile_vision", is_flag=True, help="torch.compile the OWLv2 vision tower (pays off on long GPU runs).")
@click.option("--workers", type=int, default=None, help="Decode/preprocess threads (default: chosen from the CPU count).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@handle_errors
def label(inputs, out_dir, prompts, ontology_file, mode, model, sam_model, threshold, nms_iou, no_nms,
          agnostic_nms_iou, min_area, max_area, batch_size, device, dtype, max_pixels, exact, compile_vision, workers,
          quiet):
    """Label images (files and folders, searched recursively) into the run folder --out.

    \b
    Examples:
      autolabel label photos/ --out runs/street --prompt "car=car,automobile,van" --prompt person
      autolabel label a/ b/img.jpg --out runs/x --ontology classes.yaml --mode segment
      AUTOLABEL_MODEL=./my-owlv2 autolabel label photos/ --out runs/y --prompt forklift

    Re-running the same command resumes: finished images are skipped. A folder made with other
    options is refused. Unreadable images are reported and skipped.
    """
    from tqdm import tqdm

    from autolabel.errors import ConfigError
    from autolabel.labeling import label_into_store
    from autolabel.ontology import Ontology
    from autolabel.pipeline import DetectConfig, Labeler
    from autolabel.settings import load_settings
    from autolabel.store import open_store

    settings = load_settings(model=model, sam_model=sam_model, device=device, dtype=dtype, threshold=threshold,
                             nms_iou=nms_iou, batch_size=batch_size, max_image_pixels=max_pixels)
    if bool(prompts) == bool(ontology_file):
        raise ConfigError("give classes with --prompt (repeatable) or --ontology FILE (exactly one of them)")
    ontology = Ontology.from_file(ontology_file) if ontology_file else Ontology.from_prompts(prompts)
    config = DetectConfig(threshold=settings.threshold, nms_iou=None if no_nms else settings.nms_iou,
                          agnostic_nms_iou=agnostic_nms_iou, min_area_frac=min_area, max_area_frac=max_area)
    labeler = Labeler(ontology, model=settings.model, sam_model=settings.sam_model if mode == "segment" else None,
                      mode=mode, config=config, device=settings.device, dtype=settings.dtype,
                      exact=exact, compile=compile_vision)

    started = time.perf_counter()
    bars = []  # created once the work is known, so a refused run prints no empty bar

    def on_total(total: int) -> None:
        bars.append(tqdm(total=total, disable=quiet, unit="img", desc="labelling", dynamic_ncols=True))

    with open_store(out_dir) as store:
        try:
            summary = label_into_store(
                labeler, inputs, store, batch_size=settings.batch_size, max_pixels=settings.max_image_pixels,
                on_total=on_total, on_progress=lambda n: bars[0].update(n), workers=workers,
            )
        finally:
            for bar in bars:
                bar.close()
    elapsed = time.perf_counter() - started
    click.echo(f"images: {summary.done} done, {summary.failed} failed, {summary.skipped} skipped (already done)"
               f" in {elapsed:.1f}s ({summary.images_per_second:.2f} img/s)")
    for name in ontology.names:
        click.echo(f"  {name}: {summary.per_class.get(name, 0)} boxes")
    for path, error in summary.failures:
        click.echo(f"  failed: {error}", err=True)
    click.echo(f"run folder: {out_dir}")
