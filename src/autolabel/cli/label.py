"""``autolabel label``: run a detector (and a segmenter) over images, or track objects through videos,
into a resumable run folder."""

from __future__ import annotations

import time

import click

from autolabel.cli.errors import handle_errors
from autolabel.cli.options import class_options, detect_config, filter_options
from autolabel.cli.video import track_options
from autolabel.pipeline import DEFAULT_BATCH_SIZE, MODES
from autolabel.models.precision import PRECISIONS

ENGINES = ("local", "ray")


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Run folder (created; re-use it to resume).")
@class_options
@click.option("--mode", type=click.Choice((*MODES, "track")), default=MODES[0], show_default=True,
              help="segment adds SAM2 masks; track labels videos with tracked objects (detector on keyframes, SAM2 video in between).")
@click.option("--model", default=None, help="Detector checkpoint of any family in `autolabel models`: hub id or local dir [env AUTOLABEL_MODEL].")
@click.option("--sam-model", default=None, help="Segmenter checkpoint for --mode segment (not needed by detectors that make masks) [env AUTOLABEL_SAM_MODEL].")
@filter_options
@click.option("--batch-size", type=int, default=None, help=f"Images per forward pass (default {DEFAULT_BATCH_SIZE}).")
@click.option("--device", default=None, help="auto, cpu, cuda, cuda:N or mps [env AUTOLABEL_DEVICE].")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None,
              help="Model precision: auto (fp16 on CUDA, fp32 elsewhere), fp32, bf16 (GPU, or CPU with bf16 instructions), fp16 (GPU), int8 (CPU) [env AUTOLABEL_PRECISION].")
@click.option("--max-pixels", type=int, default=None, help="Refuse images with more pixels than this (decompression-bomb guard).")
@click.option("--exact", is_flag=True, help="Decode every image at full size and use the stock processors (slower; the default draft-decodes JPEGs and preprocesses in torch, see BENCHMARKS.md).")
@click.option("--tiles", default="off", show_default=True,
              help="Sliced inference for small objects: off, auto[:overlap] (tiles of about the model's input side, "
                   "at most 4x4) or RxC[:overlap] (e.g. 3x4:0.2); the full image is labelled too and the results merged.")
@click.option("--keep-candidates", type=int, default=None,
              help="Keep the top K candidate boxes per image so `autolabel relabel` can re-prompt the run without the backbone (default 300 for OWLv2, 0 = off).")
@click.option("--compile", "compile_vision", is_flag=True, help="torch.compile the OWLv2 vision tower, on the CPU or the GPU (pays off on long runs).")
@click.option("--workers", type=int, default=None, help="Decode/preprocess threads (default: chosen from the CPU count).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--engine", type=click.Choice(ENGINES), default=ENGINES[0], show_default=True,
              help="local: this process; ray: decode tasks and model actors on a Ray cluster (pip install 'autolabel[ray]').")
@click.option("--ray-address", default="local", show_default=True,
              help="--engine ray: local (a private cluster here, shut down at the end), auto, or ray://host:port.")
@click.option("--actors", type=int, default=1, show_default=True, help="--engine ray: model actors (each loads the models once).")
@click.option("--gpus-per-actor", type=float, default=None, help="--engine ray: GPUs per actor (default: 1 when the cluster has GPUs, else 0).")
@click.option("--cpus-per-actor", type=float, default=1.0, show_default=True, help="--engine ray: CPUs each actor reserves.")
@track_options
@handle_errors
def label(inputs, out_dir, prompts, ontology_file, exemplars_file, mode, model, sam_model, threshold, nms_iou, no_nms,
          agnostic_nms_iou, min_area, max_area, batch_size, device, precision, max_pixels, exact, tiles, keep_candidates, compile_vision,
          workers, quiet, engine, ray_address, actors, gpus_per_actor, cpus_per_actor, video_fps, video_every,
          keyframe_every, frame_folders, video_model):
    """Label images (files and folders, searched recursively) into the run folder --out.

    \b
    Examples:
      autolabel label photos/ --out runs/street --prompt "car=car,automobile,van" --prompt person
      autolabel label a/ b/img.jpg --out runs/x --ontology classes.yaml --mode segment
      autolabel label aerial/ --out runs/small --prompt car --tiles auto
      autolabel label clip.mp4 --out runs/clip --mode track --prompt person --prompt forklift --fps 5
      AUTOLABEL_MODEL=./my-owlv2 autolabel label photos/ --out runs/y --prompt forklift
      autolabel label s3://bucket/photos --out runs/z --prompt person --engine ray --ray-address auto --actors 4

    Re-running the same command resumes: finished images are skipped. A folder made with other
    options is refused. Unreadable images are reported and skipped.
    """
    from tqdm import tqdm

    from autolabel.errors import ConfigError
    from autolabel.labeling import label_into_store
    from autolabel.models.registry import makes_masks
    from autolabel.ontology import load_ontology
    from autolabel.pipeline import Labeler
    from autolabel.settings import load_settings
    from autolabel.store import open_store
    from autolabel.tiling import parse_tiles

    settings = load_settings(model=model, sam_model=sam_model, device=device, precision=precision, threshold=threshold,
                             nms_iou=nms_iou, batch_size=batch_size, max_image_pixels=max_pixels)
    ontology = load_ontology(prompts, ontology_file, exemplars_file)
    tiling = parse_tiles(tiles)
    if keep_candidates and engine == "ray":
        raise ConfigError("--keep-candidates runs on the local engine only (--engine local)")
    config = detect_config(settings, no_nms, agnostic_nms_iou, min_area, max_area)
    # A detector that makes masks (SAM 3) segments by itself unless --sam-model asks for a segmenter.
    use_segmenter = mode == "segment" and (sam_model is not None or not makes_masks(settings.model))
    # Track mode: the detector labels keyframes (with its own masks if it makes them); SAM2 video tracks.
    labeler_mode = ("segment" if makes_masks(settings.model) else "detect") if mode == "track" else mode
    labeler = Labeler(ontology, model=settings.model, sam_model=settings.sam_model if use_segmenter else None,
                      mode=labeler_mode, config=config, device=settings.device, precision=settings.precision,
                      exact=exact, compile=compile_vision, tiles=tiling)
    if mode == "track":
        if engine == "ray":
            raise ConfigError("--mode track runs on the local engine only (--engine local)")
        from autolabel.cli.video import label_videos

        label_videos(inputs, out_dir, labeler, video_model=video_model or sam_model, video_fps=video_fps,
                     video_every=video_every, keyframe_every=keyframe_every, frame_folders=frame_folders, quiet=quiet)
        return

    started = time.perf_counter()
    bars = []  # created once the work is known, so a refused run prints no empty bar

    def on_total(total: int) -> None:
        bars.append(tqdm(total=total, disable=quiet, unit="img", desc="labelling", dynamic_ncols=True))

    with open_store(out_dir) as store:
        try:
            if engine == "ray":
                from autolabel.distributed import RayOptions, label_on_ray

                options = RayOptions(address=ray_address, actors=actors, gpus_per_actor=gpus_per_actor,
                                     cpus_per_actor=cpus_per_actor, batch_size=settings.batch_size,
                                     max_pixels=settings.max_image_pixels)
                summary = label_on_ray(labeler, inputs, store, options, on_total=on_total,
                                       on_progress=lambda n, actor: bars[0].update(n))
            else:
                summary = label_into_store(
                    labeler, inputs, store, batch_size=settings.batch_size, max_pixels=settings.max_image_pixels,
                    on_total=on_total, on_progress=lambda n: bars[0].update(n), workers=workers,
                    keep_candidates=keep_candidates,
                )
        finally:
            for bar in bars:
                bar.close()
    elapsed = time.perf_counter() - started
    click.echo(f"images: {summary.done} done, {summary.failed} failed, {summary.skipped} skipped (already done)"
               f" in {elapsed:.1f}s ({summary.images_per_second:.2f} img/s)")
    for name in ontology.names:
        click.echo(f"  {name}: {summary.per_class.get(name, 0)} boxes")
    for actor, count in sorted(getattr(summary, "per_actor", {}).items()):
        click.echo(f"  actor {actor}: {count} images")
    for path, error in summary.failures:
        click.echo(f"  failed: {error}", err=True)
    click.echo(f"run folder: {out_dir}")
