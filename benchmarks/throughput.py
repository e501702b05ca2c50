#!/usr/bin/env python
"""Throughput: autolabel's pipeline against the plain transformers recipe, side by side.

One run measures, on the same detector family (``--family``, default owlv2), checkpoint and images:

- recipe: per image, the family's processor(text, image) -> model -> its post-processing
  (``post_process_grounded_object_detection``; SAM 3: ``post_process_object_detection``; segment
  mode: then ``Sam2Processor(image, boxes)`` -> model -> ``post_process_masks``), as the
  transformers docs show it, on the same device, in ``--recipe-precision`` (fp32 unless told);
- ours: ``labeling.label_into_store`` -- discovery, decode, preprocessing, models, post-processing,
  mask encoding and SQLite writes, into a fresh run folder;
- model: the forward passes alone on pre-made tensors, batched like ours (the ceiling).

Ours and model-only run in each ``--precision`` (``models.precision``: auto, fp32, bf16, fp16, int8;
a comma list compares several in one run), plain or with a compiled vision tower (``--compile
on|both``). Each (precision, compile) pair is a variant with its own copy of the model; with several,
side keys in the JSON carry the variant (``ours bf16``, ``model fp32+compile``).

Models: a checkpoint (hub id or folder) or, by default, the full-size architectures with random
weights (OWLv2 B/16 at 960 px, OWL-ViT B/32, Grounding DINO and MM-Grounding-DINO Swin-T, OmDet-Turbo
Swin-T, SAM 3, SAM2 hiera-large), which cost the same compute as trained weights.
Images: a folder, or generated photo-like JPEGs (12 MP, 2 MP, VGA). Prints one table and writes a
JSON file (benchmarks/results/ by default). ``--smoke`` runs everything with tiny checkpoints (CI).
``--rss 20,200`` checks that peak memory does not grow with the number of images (streaming).

Examples:
  python benchmarks/throughput.py --generate 12mp:8 --modes detect            # the CPU figures
  python benchmarks/throughput.py --generate 12mp:8 --modes detect --precision int8   # vs the fp32 recipe
  python benchmarks/throughput.py --generate 12mp:2 --precision fp32,bf16,int8 --rounds 2  # paired precisions
  python benchmarks/throughput.py --generate 12mp:2 --sides model --precision fp32,bf16 --compile both
  python benchmarks/throughput.py --generate 2mp:512 --modes detect,segment --precision bf16 --recipe-precision bf16
  python benchmarks/throughput.py --family grounding-dino --generate 12mp:2 --rounds 2
  python benchmarks/throughput.py --model google/owlv2-base-patch16-ensemble --images photos/
  python benchmarks/throughput.py --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

from autolabel.models.precision import PRECISIONS  # noqa: E402 -- after the path set-up above

RESULTS = REPO / "benchmarks" / "results"
PROMPTS = ["person", "car=car,van,truck", "dog", "bicycle"]
# bf16 dense tensor-core peaks (TFLOP/s, no sparsity) by device-name fragment.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


# -- set-up ----------------------------------------------------------------------------------------


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


# Per family: the random-weight sizes (``random:NAME``; "tiny" is every family's test size, the
# first full size is the default), the transformers class of the plain recipe, and the recipe itself.
FULL_SIZES = {"owlv2": "base-patch16", "owlvit": "base-patch32", "grounding-dino": "swin-t",
              "mm-grounding-dino": "swin-t", "omdet-turbo": "swin-t", "sam3": "released", "sam2": "hiera-large"}
RECIPE_MODELS = {"owlv2": "Owlv2ForObjectDetection", "owlvit": "OwlViTForObjectDetection",
                 "grounding-dino": "GroundingDinoForObjectDetection",
                 "mm-grounding-dino": "MMGroundingDinoForObjectDetection",
                 "omdet-turbo": "OmDetTurboForObjectDetection", "sam3": "Sam3Model"}
FAMILIES = tuple(RECIPE_MODELS)


def random_sizes(family: str) -> tuple:
    """(builder, {size name: builder keywords}) of a family's random-weight checkpoints."""
    from functools import partial

    from autolabel.testing import (grounding_dino_checkpoint, omdet_checkpoint, owlv2_checkpoint,
                                   owlvit_checkpoint, sam2_checkpoint, sam3_checkpoint)

    dino = {"tiny": {}, "swin-t": grounding_dino_checkpoint.FULL_SIZE_GROUNDING_DINO}
    return {
        "owlv2": (owlv2_checkpoint.build_owlv2_checkpoint,
                  {"tiny": {}, "tiny-960": dict(image_size=960), **owlv2_checkpoint.FULL_SIZE_OWLV2}),
        "owlvit": (owlvit_checkpoint.build_owlvit_checkpoint, {"tiny": {}, **owlvit_checkpoint.FULL_SIZE_OWLVIT}),
        "grounding-dino": (grounding_dino_checkpoint.build_grounding_dino_checkpoint, dino),
        "mm-grounding-dino": (partial(grounding_dino_checkpoint.build_grounding_dino_checkpoint,
                                      variant="mm-grounding-dino"), dino),
        "omdet-turbo": (omdet_checkpoint.build_omdet_checkpoint, {"tiny": {}, "swin-t": omdet_checkpoint.FULL_SIZE_OMDET}),
        "sam3": (sam3_checkpoint.build_sam3_checkpoint, {"tiny": {}, "released": sam3_checkpoint.FULL_SIZE_SAM3}),
        "sam2": (sam2_checkpoint.build_sam2_checkpoint, {"tiny": {}, **sam2_checkpoint.FULL_SIZE_SAM2}),
    }[family]


def checkpoint(spec: str, family: str, cache: Path) -> str:
    """A checkpoint path: ``random:NAME`` builds (once, cached) a random-weight one of ``family``."""
    if not spec.startswith("random:"):
        return spec
    name = spec.split(":", 1)[1]
    target = cache / f"{family}-{name}"
    build, sizes = random_sizes(family)
    if name not in sizes:
        raise SystemExit(f"no random {family} size {name!r}: use one of {', '.join(sizes)}")
    # The builder's keywords beside the build: a build made with other sizes is rebuilt (one
    # without the record, from before it was kept, is reused).
    recipe = json.dumps(sizes[name], sort_keys=True, default=str)
    marker = target / "build.json"
    if (target / "config.json").exists() and (not marker.exists() or marker.read_text() == recipe):
        return str(target)
    log(f"building random {family} {name} in {target} ...")
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    build(tmp, **sizes[name])
    (tmp / "build.json").write_text(recipe)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return str(target)


def image_sets(args) -> dict[str, list[Path]]:
    """{set name: sorted image paths}: a given folder, or generated JPEGs per size (``--unique``
    distinct images, repeated under other names up to the count: decode work is the same)."""
    if args.images:
        from autolabel.images import discover_images

        return {Path(args.images).name: discover_images([args.images])}
    sets = {}
    for item in args.generate.split(","):
        name, count = item.split(":")
        count = int(count)
        unique = min(count, args.unique)
        source = args.image_cache / f"{name}-unique"
        distinct = generate(source, name, unique)
        folder = args.image_cache / f"{name}-{count}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            link_file(distinct[i % unique], folder / f"{name}_{i:05d}.jpg")
        sets[name] = sorted(folder.glob(f"{name}_*.jpg"))[:count]
    return sets


def link_file(src: Path, dst: Path) -> None:
    """A hard link (discovery resolves symbolic links, so those would collapse to one image)."""
    if dst.exists():
        return
    try:
        os.link(src.resolve(), dst)
    except OSError:
        shutil.copyfile(src, dst)


def generate(folder: Path, name: str, count: int) -> list[Path]:
    """``count`` photo-like JPEGs of size ``name`` in ``folder`` (in parallel, reused if present)."""
    from concurrent.futures import ProcessPoolExecutor

    have = len(list(folder.glob(f"{name}_*.jpg"))) if folder.exists() else 0
    if have < count:
        log(f"generating {count - have} {name} JPEGs in {folder} ...")
        procs = max(1, min(16, (os.cpu_count() or 1), count))
        chunks = [list(range(i, count, procs)) for i in range(procs)]
        with ProcessPoolExecutor(procs) as pool:
            list(pool.map(_generate_some, [folder] * procs, [name] * procs, chunks))
    return sorted(folder.glob(f"{name}_*.jpg"))[:count]


def _generate_some(folder: Path, name: str, indices: list[int]) -> None:
    from autolabel.testing.photos import write_photos

    write_photos(folder, {name: max(indices) + 1}, only=indices)


def device_info(device: str) -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"device": device, "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
            "cpu": cpu, "cores": os.cpu_count()}
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
        info["bf16_peak_tflops"] = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in info["gpu"]), None)
    return info


def reset_peaks(device: str) -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux)
    except OSError:
        pass
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peaks(device: str) -> dict:
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                out["peak_rss_mib"] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        import resource

        out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if device.startswith("cuda"):
        import torch

        out["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def sync(device: str):
    import torch

    if device.startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


# -- the three sides -------------------------------------------------------------------------------


def detector_recipe(family: str, processor, model, image, queries: list[str], device, dtype) -> dict:
    """One image through a family's plain recipe as its transformers docs show it: processor ->
    model -> its post-processing; ``{"boxes", "scores"}`` in original pixels."""
    import torch

    target = [(image.height, image.width)]
    if family in ("owlv2", "owlvit"):
        inputs = processor(text=[queries], images=image, return_tensors="pt", truncation=True).to(device, dtype)
    elif family == "sam3":  # one (image, prompt) pair per prompt
        inputs = processor(images=[image] * len(queries), text=queries, return_tensors="pt").to(device, dtype)
    else:
        inputs = processor(images=image, text=queries, return_tensors="pt").to(device, dtype)
    with torch.inference_mode():
        outputs = model(**inputs)
    if family in ("owlv2", "owlvit"):
        return processor.post_process_grounded_object_detection(outputs, threshold=0.0, target_sizes=target)[0]
    if family in ("grounding-dino", "mm-grounding-dino"):
        return processor.post_process_grounded_object_detection(
            outputs, inputs["input_ids"], threshold=0.0, text_threshold=0.0, target_sizes=target)[0]
    if family == "omdet-turbo":
        return processor.post_process_grounded_object_detection(outputs, text_labels=queries, threshold=0.0,
                                                                target_sizes=target)[0]
    results = processor.post_process_object_detection(outputs, threshold=0.0, target_sizes=target * len(queries))
    return {key: torch.cat([r[key] for r in results]) for key in ("boxes", "scores")}


class Recipe:
    """The plain transformers recipe of a detector family, one image at a time (segment mode: its
    boxes through the SAM2 recipe)."""

    def __init__(self, family, det_path, sam_path, device, dtype, boxes):
        import torch
        import transformers
        from transformers import AutoProcessor

        from autolabel.ontology import Ontology

        self.family, self.device, self.dtype, self.boxes = family, device, dtype, boxes
        self.queries = list(Ontology.from_prompts(PROMPTS).queries)
        self.processor = AutoProcessor.from_pretrained(det_path)
        model_class = getattr(transformers, RECIPE_MODELS[family])
        self.model = model_class.from_pretrained(det_path, use_safetensors=True).to(device=device, dtype=dtype).eval()
        self.sam_processor = self.sam_model = None
        if sam_path:
            from transformers import Sam2Model, Sam2Processor

            self.sam_processor = Sam2Processor.from_pretrained(sam_path)
            self.sam_model = Sam2Model.from_pretrained(sam_path, use_safetensors=True).to(device=device, dtype=dtype).eval()
        self.sync = sync(device)
        self.torch = torch

    def run(self, paths, segment: bool) -> dict:
        from PIL import Image, ImageOps

        torch = self.torch
        stages = dict.fromkeys(["decode", "detector"], 0.0)
        if segment:
            stages.update(dict.fromkeys(["sam2_preprocess", "sam2_forward", "sam2_post_process"], 0.0))

        def timed(name, fn):
            start = time.perf_counter()
            out = fn()
            self.sync()
            stages[name] += time.perf_counter() - start
            return out

        started = time.perf_counter()
        for path in paths:
            def decode():
                with Image.open(path) as im:
                    return ImageOps.exif_transpose(im).convert("RGB")

            image = timed("decode", decode)
            result = timed("detector", lambda: detector_recipe(self.family, self.processor, self.model, image,
                                                               self.queries, self.device, self.dtype))
            if segment:
                def top_boxes():
                    order = torch.argsort(result["scores"], descending=True)[: self.boxes]
                    return result["boxes"][order].float().cpu()

                boxes = top_boxes()
                sam_inputs = timed("sam2_preprocess", lambda: self.sam_processor(
                    images=image, input_boxes=[boxes.tolist()], return_tensors="pt").to(self.device, self.dtype))
                with torch.inference_mode():
                    sam_out = timed("sam2_forward", lambda: self.sam_model(**sam_inputs, multimask_output=False))
                timed("sam2_post_process", lambda: self.sam_processor.post_process_masks(
                    sam_out.pred_masks.float().cpu(), sam_inputs["original_sizes"].cpu()))
        seconds = time.perf_counter() - started
        return {"images": len(paths), "seconds": seconds, "images_per_s": len(paths) / seconds,
                "stages_ms_per_image": {k: 1000 * v / len(paths) for k, v in stages.items()}}


class Ours:
    """``label_into_store`` into a fresh run folder."""

    def __init__(self, det_path, sam_path, device, precision, compile_vision, args):
        from autolabel.ontology import Ontology
        from autolabel.pipeline import DetectConfig, Labeler

        self.args = args
        self.device = device
        config = DetectConfig(threshold=args.threshold, nms_iou=args.nms_iou, max_detections=args.boxes)
        ontology = Ontology.from_prompts(PROMPTS)
        detect = Labeler(ontology, model=det_path, config=config, device=device, precision=precision,
                         compile=compile_vision)
        self.labelers = {"detect": detect}
        if sam_path:  # one copy of the detector, shared by both modes
            self.labelers["segment"] = Labeler(ontology, detector=detect.detector, sam_model=sam_path, mode="segment",
                                               config=config, device=device, precision=precision, compile=compile_vision)

    def run(self, paths, segment: bool, profile: bool = False) -> dict:
        from autolabel.labeling import label_into_store
        from autolabel.pipeline import StageTimes
        from autolabel.store import open_store

        labeler = self.labelers["segment" if segment else "detect"]
        times = StageTimes(sync=sync(self.device) if profile else None)
        self.args.image_cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.args.image_cache) as tmp:
            folder = Path(tmp) / "images"
            folder.mkdir()
            for i, p in enumerate(paths):  # links: the run sees exactly these files
                link_file(p, folder / f"{i:05d}_{p.name}")
            with open_store(Path(tmp) / "run") as store:
                summary = label_into_store(labeler, [folder], store, batch_size=self.args.batch_size,
                                           workers=self.args.workers, times=times)
                boxes = sum(len(store.labels(r.id)) for r in store.images())
        if summary.failed:
            raise RuntimeError(f"ours failed on {summary.failed} images: {summary.failures[:3]}")
        n = summary.done
        return {"images": n, "seconds": summary.seconds, "images_per_s": n / summary.seconds,
                "boxes_per_image": boxes / max(n, 1),
                "stages_ms_per_image": {k: 1000 * v / n for k, v in sorted(times.as_dict().items())}}


class ModelOnly:
    """Forward passes on pre-made tensors, batched like ours: the ceiling."""

    def __init__(self, ours: Ours):
        self.ours = ours

    def run(self, paths, segment: bool) -> dict:
        import numpy as np
        import torch

        from autolabel.geometry import Size

        labeler = self.ours.labelers["segment" if segment else "detect"]
        detector = labeler.detector
        bs = self.ours.args.batch_size
        done = sync(self.ours.device)
        text = detector.encode_text(labeler.ontology.queries)
        # One real input, repeated: each family's own input shape (some are not square).
        prepared = labeler.prepare(paths[0], keep_pixels=True)
        one = prepared.detector_input
        if one is None:  # made on the device
            one = detector.preprocessor(prepared.pixels, prepared.size, detector.device)
        pixel_values = torch.stack([one] * bs).to(detector.device)
        if segment:
            seg = labeler.segmenter
            sam_values = torch.randn(bs, 3, seg.image_size, seg.image_size, device=seg.device, dtype=seg.dtype)
            rng = np.random.default_rng(0)
            xy = rng.uniform(0, 1000, (self.ours.args.boxes, 2, 2))
            boxes = np.concatenate([xy.min(1), xy.max(1) + 1], axis=1)
        batches = -(-len(paths) // bs)
        done()
        started = time.perf_counter()
        # A detector that makes masks scores without them in detect mode (what the engine asks).
        options = {"masks": segment} if detector.yields_masks else {}
        with torch.inference_mode():
            for _ in range(batches):
                detector.score(detector.encode_images(pixel_values), text, **options)
                if segment:
                    for emb in seg.embed(sam_values, [Size(1000, 1000)] * bs):
                        seg.predict_logits(emb, boxes)
        done()
        seconds = time.perf_counter() - started
        n = batches * bs
        return {"images": n, "seconds": seconds, "images_per_s": n / seconds}


def vision_flops(detector) -> float | None:
    """FLOPs of one image through the OWLv2 vision tower + heads (torch's flop counter, on the
    uncompiled module)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    try:
        model = detector.model
        pv = torch.zeros(1, 3, detector.image_size, detector.image_size, device=detector.device, dtype=detector.dtype)
        text = detector.encode_text(["x"])
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            feature_map, _ = type(model).image_embedder(model, pixel_values=pv)  # bypasses compile_vision()
            b, h, w, d = feature_map.shape
            feats = feature_map.reshape(b, h * w, d)
            model.box_predictor(feats, feature_map)
            model.class_predictor(feats, text.embeds[None], text.mask[None])
        return float(counter.get_total_flops())
    except Exception as exc:  # the counter is diagnostics only
        log(f"flop count failed: {exc}")
        return None


# -- main ------------------------------------------------------------------------------------------


def variants(args, device: str) -> list[tuple[str, str, bool]]:
    """(name, precision, compiled) for each ``--precision`` x ``--compile`` pair."""
    from autolabel.models.precision import resolve_precision

    compiled = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    out = []
    for name in args.precision.split(","):
        precision = resolve_precision(name, device).name
        out += [(precision + ("+compile" if c else ""), precision, c) for c in compiled]
    return out


def run_benchmark(args) -> dict:
    import torch

    from autolabel.models.precision import resolve_precision
    from autolabel.settings import resolve_device

    device = resolve_device(args.device)
    plans = variants(args, device)
    recipe_dtype = resolve_precision(args.recipe_precision, device).dtype
    if args.threads:
        torch.set_num_threads(args.threads)
    modes = args.modes.split(",")
    sides = args.sides.split(",")
    det = checkpoint(args.model, args.family, args.cache)
    sam = checkpoint(args.sam2, "sam2", args.cache) if "segment" in modes else None
    sets = image_sets(args)

    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": device_info(device),
              "precision": ",".join(dict.fromkeys(p for _, p, _ in plans)), "variants": [n for n, _, _ in plans],
              "recipe_precision": resolve_precision(args.recipe_precision, device).name,
              "family": args.family, "model": args.model, "sam2": args.sam2 if sam else None,
              "batch_size": args.batch_size, "boxes": args.boxes, "rounds": args.rounds,
              "time": time.strftime("%Y-%m-%d %H:%M:%S"), "results": []}
    log(f"device {device} {report['variants']} (recipe {report['recipe_precision']}), threads "
        f"{torch.get_num_threads()}, sets { {k: len(v) for k, v in sets.items()} }, modes {modes}, sides {sides}")

    def key(side: str, variant: str) -> str:  # with one variant, the plain side names
        return side if len(plans) == 1 else f"{side} {variant}"

    ours = {name: Ours(det, sam, device, precision, compiled, args) for name, precision, compiled in plans}
    models = {name: ModelOnly(o) for name, o in ours.items()}
    recipe = Recipe(args.family, det, sam, device, recipe_dtype, args.boxes) if "recipe" in sides else None
    first = next(iter(ours.values()))
    counted = device.startswith("cuda") and args.family == "owlv2"  # the counter knows OWLv2's tower
    flops = vision_flops(first.labelers["detect"].detector) if counted else None
    report["vision_gflop_per_image"] = flops / 1e9 if flops else None
    order = [("recipe", None)] if recipe else []  # one round: the recipe, then each variant's sides
    order += [(side, name) for name in ours for side in ("ours", "model") if side in sides]

    for set_name, paths in sets.items():
        for mode in modes:
            segment = mode == "segment"
            warm = paths[: max(1, min(len(paths), args.batch_size))]
            entry = {"set": set_name, "mode": mode, "images": len(paths), "warmup_s": {}}
            for name in ours:  # model-only shares ours' models: one warm-up (and compilation) each
                log(f"[{set_name} {mode}] warm-up {name} ...")
                started = time.perf_counter()
                (ours[name] if "ours" in sides else models[name]).run(warm, segment)
                entry["warmup_s"][name] = time.perf_counter() - started
            if recipe:
                recipe.run(warm[:1], segment)
            runs = {key(side, name): [] for side, name in order if name}
            runs.update({"recipe": []} if recipe else {})
            for r in range(args.rounds):  # interleaved, so a busy neighbour hurts every side alike
                for side, name in order:
                    label = key(side, name) if name else side
                    log(f"[{set_name} {mode}] round {r + 1}/{args.rounds}: {label} on {len(paths)} images ...")
                    reset_peaks(device)
                    if side == "recipe":
                        result = recipe.run(paths[: args.recipe_images or len(paths)], segment)
                    elif side == "ours":
                        result = ours[name].run(paths, segment)
                    else:
                        result = models[name].run(paths, segment)
                    result.update(peaks(device))
                    log(f"    {result['images_per_s']:.3f} images/s")
                    runs[label].append(result)
            for name in ours:
                combine_rounds(entry, runs, lambda side: key(side, name))
            if device.startswith("cuda") and "ours" in sides:  # stage times need per-stage syncs: own run
                for name in ours:
                    entry[key("ours_profiled", name)] = ours[name].run(paths, segment, profile=True)
            if flops and "ours" in entry:
                entry["ours_vision_tflops"] = flops * entry["ours"]["images_per_s"] / 1e12
                peak = report["machine"].get("bf16_peak_tflops")
                if peak:
                    entry["ours_vision_fraction_of_bf16_peak"] = entry["ours_vision_tflops"] / peak
            report["results"].append(entry)
    return report


def combine_rounds(entry: dict, runs: dict[str, list[dict]], key) -> None:
    """Per side of one variant (``key(side)`` names it), the run with the median rate (all rounds'
    rates kept); ratios are the medians of the per-round ratios (sides of one round ran back to back,
    so they saw the same neighbours)."""
    import statistics

    for side in ("recipe", key("ours"), key("model")):
        if side in runs and side not in entry:
            results = runs[side]
            chosen = sorted(results, key=lambda res: res["images_per_s"])[len(results) // 2]
            chosen["all_images_per_s"] = [round(res["images_per_s"], 4) for res in results]
            entry[side] = chosen

    def paired(a: str, b: str) -> float:
        return statistics.median(x["images_per_s"] / y["images_per_s"] for x, y in zip(runs[a], runs[b]))

    if key("ours") in runs and "recipe" in runs:
        entry[key("speedup_vs_recipe")] = paired(key("ours"), "recipe")
    if key("ours") in runs and key("model") in runs:
        entry[key("fraction_of_model_only")] = paired(key("ours"), key("model"))
    if "recipe" in runs and key("model") in runs:
        entry[key("model_vs_recipe")] = paired(key("model"), "recipe")


def print_table(report: dict) -> None:
    m = report["machine"]
    precision = report.get("precision") or report.get("dtype")  # older reports name a dtype
    recipe = f", recipe {report['recipe_precision']}" if "recipe_precision" in report else ""
    family = f"{report['family']} {report['model']}, " if "family" in report else ""
    print(f"\n{report['command']}\n{family}{m.get('gpu') or m['cpu']} ({m['device']}, {precision}{recipe}, "
          f"{m['cpu_threads']} torch threads, {m['cores']} cores), torch {m['torch']}, "
          f"transformers {m.get('transformers')}, batch {report['batch_size']}")
    names = report.get("variants") or [precision]  # older reports: one variant

    def key(side: str, variant: str) -> str:
        return side if len(names) == 1 else f"{side} {variant}"

    head = (f"{'set':<8} {'mode':<8} {'n':>4} {'variant':<13} {'recipe img/s':>13} {'ours img/s':>11} {'ratio':>6} "
            f"{'model img/s':>12} {'ours/model':>10} {'warm-up s':>9} {'RSS MiB r/o':>13} {'GPU MiB r/o':>13}")
    print(head)
    print("-" * len(head))
    for e in report["results"]:
        for name in names:
            r, o, mo = e.get("recipe", {}), e.get(key("ours", name), {}), e.get(key("model", name), {})

            def f(d, k, fmt="{:.3f}"):
                return fmt.format(d[k]) if k in d and d[k] is not None else "-"

            rss = f"{f(r, 'peak_rss_mib', '{:.0f}')}/{f(o, 'peak_rss_mib', '{:.0f}')}"
            gpu = f"{f(r, 'peak_gpu_mib', '{:.0f}')}/{f(o, 'peak_gpu_mib', '{:.0f}')}"
            print(f"{e['set']:<8} {e['mode']:<8} {e['images']:>4} {name:<13} {f(r, 'images_per_s'):>13} "
                  f"{f(o, 'images_per_s'):>11} {f(e, key('speedup_vs_recipe', name), '{:.2f}x'):>6} "
                  f"{f(mo, 'images_per_s'):>12} {f(e, key('fraction_of_model_only', name), '{:.3f}'):>10} "
                  f"{f(e.get('warmup_s', {}), name, '{:.1f}'):>9} {rss:>13} {gpu:>13}")
    print("\nper-stage ms/image (ours: summed over threads, decode/preprocess overlap the model; "
          "recipe: sequential)")
    for e in report["results"]:
        ours = [side for name in names for side in (key("ours_profiled", name), key("ours", name)) if side in e]
        for side in ["recipe", *(ours[:1] if len(names) == 1 else ours)]:
            if side in e:
                stages = ", ".join(f"{k} {v:.1f}" for k, v in e[side]["stages_ms_per_image"].items())
                print(f"  {e['set']} {e['mode']} {side}: {stages}")
        if "ours_vision_tflops" in e:
            frac = e.get("ours_vision_fraction_of_bf16_peak")
            print(f"  {e['set']} {e['mode']} OWLv2 vision {e['ours_vision_tflops']:.1f} TFLOP/s"
                  + (f" = {100 * frac:.1f}% of bf16 peak" if frac else ""))


def rss_check(args) -> dict:
    """Peak RSS of ``ours`` for each image count, each in a fresh process (streaming check)."""
    counts = [int(c) for c in args.rss.split(",")]
    paths = generate(args.image_cache / f"{args.rss_size}-unique", args.rss_size, min(max(counts), args.unique * 4))
    out = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "family": args.family, "model": args.model,
           "image_size": args.rss_size, "peak_rss_mib": {}}
    for n in counts:
        with tempfile.TemporaryDirectory(dir=args.image_cache) as tmp:
            subset = Path(tmp) / "images"
            subset.mkdir()
            for i in range(n):  # more images than distinct files: hard links repeat them
                link_file(paths[i % len(paths)], subset / f"{i:05d}_{paths[i % len(paths)].name}")
            cmd = [sys.executable, __file__, "--rss-child", str(subset), "--family", args.family, "--model", args.model, "--cache",
                   str(args.cache), "--batch-size", str(args.batch_size), "--device", args.device,
                   "--precision", args.precision]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            child = json.loads(proc.stdout.strip().splitlines()[-1])
        out["peak_rss_mib"][n] = child["peak_rss_mib"]
        log(f"{n} images: peak RSS {child['peak_rss_mib']:.0f} MiB ({child['images_per_s']:.1f} images/s)")
    low, high = out["peak_rss_mib"][counts[0]], out["peak_rss_mib"][counts[-1]]
    out["growth"] = high / low - 1
    print_rss(out)
    return out


def print_rss(report: dict) -> None:
    sizes = ", ".join(f"{n} images {mib:.0f} MiB" for n, mib in report["peak_rss_mib"].items())
    model = report.get("model") or report["owlv2"]  # older reports name the OWLv2 checkpoint
    print(f"\n{report['command']}\npeak RSS ({report['image_size']} JPEGs, {model}): {sizes} "
          f"({100 * report['growth']:+.1f}%)")


def rss_child(args) -> None:
    from autolabel.labeling import label_into_store
    from autolabel.ontology import Ontology
    from autolabel.pipeline import DetectConfig, Labeler
    from autolabel.store import open_store

    det = checkpoint(args.model, args.family, args.cache)
    labeler = Labeler(Ontology.from_prompts(PROMPTS), model=det, device=args.device, precision=args.precision,
                      config=DetectConfig(threshold=0.0, nms_iou=None, max_detections=args.boxes))
    with tempfile.TemporaryDirectory() as tmp, open_store(Path(tmp) / "run") as store:
        summary = label_into_store(labeler, [args.rss_child], store, batch_size=args.batch_size)
    print(json.dumps({"peak_rss_mib": peaks("cpu")["peak_rss_mib"], "images_per_s": summary.images_per_second}))


def precision_list(text: str) -> str:
    """``--precision``: one name or a comma list of names."""
    unknown = [name for name in text.split(",") if name not in PRECISIONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown precision {', '.join(unknown)}: use {', '.join(PRECISIONS)}")
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="owlv2", choices=FAMILIES,
                        help="the detector family (models/registry.py): its checkpoint and its plain recipe")
    parser.add_argument("--model", "--owlv2", dest="model", default=None,
                        help="the detector: a checkpoint (hub id or folder) of --family, or random:SIZE, a random-"
                             "weight one (tiny, or the family's released sizes; default: the first of them)")
    parser.add_argument("--sam2", default="random:hiera-large",
                        help="checkpoint or random:{hiera-tiny,hiera-large,tiny} (segment mode)")
    parser.add_argument("--modes", default="detect", help="detect,segment")
    parser.add_argument("--sides", default="recipe,ours,model", help="which sides to run")
    parser.add_argument("--images", help="a folder of images (default: generated JPEGs)")
    parser.add_argument("--generate", default="12mp:8", help="generated sets, e.g. 12mp:8,2mp:16,vga:16")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", type=precision_list,
                        help=f"ours and model-only: one of {', '.join(PRECISIONS)}, or a comma list (one variant each)")
    parser.add_argument("--recipe-precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                        help="the recipe's dtype (default fp32: the recipe as users run it on a CPU)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=None, help="decode workers (default: 1 on CPU, up to 8 on GPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads for the models")
    parser.add_argument("--boxes", type=int, default=10, help="boxes kept per image (top scores)")
    parser.add_argument("--threshold", type=float, default=0.0, help="ours: score threshold (random weights: 0)")
    parser.add_argument("--nms-iou", type=float, default=None, help="ours: per-class NMS IoU (default off)")
    parser.add_argument("--compile", nargs="?", const="on", default="off", choices=["off", "on", "both"],
                        help="torch.compile the OWLv2 vision tower (both: a plain and a compiled variant per precision)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat each side, interleaved; report medians (ratios: median of per-round ratios)")
    parser.add_argument("--recipe-images", type=int, default=None,
                        help="run the (slow) recipe on the first N images only; its rate is per image")
    parser.add_argument("--unique", type=int, default=64, help="distinct generated images per set")
    parser.add_argument("--summarize", nargs="+", type=Path, help="print the tables of these JSON reports")
    parser.add_argument("--json", type=Path, default=None, help="output JSON (default benchmarks/results/...)")
    parser.add_argument("--cache", type=Path, default=RESULTS / "cache", help="random checkpoints are built here")
    parser.add_argument("--image-cache", type=Path, default=RESULTS / "images", help="generated images go here")
    parser.add_argument("--smoke", action="store_true", help="tiny checkpoints and images, every side and mode")
    parser.add_argument("--rss", help="streaming check: image counts, e.g. 20,200 (ours only, fresh processes)")
    parser.add_argument("--rss-size", default="2mp", help="image size for --rss")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.rss_child:
        rss_child(args)
        return 0
    if args.summarize:
        for path in args.summarize:
            if path.exists():
                report = json.loads(path.read_text())
                print_rss(report) if "peak_rss_mib" in report else print_table(report)
            else:
                print(f"\n{path}: missing (that run failed or timed out)")
        return 0
    if args.smoke:
        args.model, args.sam2 = "random:tiny", "random:tiny"
        if args.modes == parser.get_default("modes") and args.family != "sam3":
            args.modes = "detect,segment"
        if args.generate == parser.get_default("generate"):
            args.generate = "vga:3"
        args.batch_size = min(args.batch_size, 2)
        args.boxes = min(args.boxes, 3)
    args.model = args.model or f"random:{FULL_SIZES[args.family]}"
    if args.family == "sam3" and "segment" in args.modes.split(","):
        parser.error("--family sam3 makes its own masks: the segment-mode recipe (SAM2 on its boxes) does not apply")
    if args.rss:
        report = rss_check(args)
    else:
        report = run_benchmark(args)
        print_table(report)
    path = args.json or RESULTS / f"throughput-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
