"""The engine on a GPU gives what it gives on the CPU: same files, same random-weight checkpoints.

On CUDA the decode workers hand over uint8 pixels and the device makes the model inputs and runs
the models (``Labeler.prepare`` / ``encode``); on the CPU the workers make the inputs. Both must
give the same detections and masks up to float rounding. Run by ``benchmarks/gpu.sh``; prints one
line per mode and exits non-zero on a mismatch. ``--device cpu`` compares the CPU with itself: it
only checks that the script runs (``gpu.sh --check``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np


def _run(photos: Path, run_dir: Path, owl: Path, sam: Path | None, device: str) -> dict:
    from autolabel.labeling import label_into_store
    from autolabel.ontology import Ontology
    from autolabel.pipeline import DetectConfig, Labeler
    from autolabel.store import open_store

    labeler = Labeler(Ontology.from_prompts(["car=car,van", "person"]), model=str(owl),
                      sam_model=str(sam) if sam else None, mode="segment" if sam else "detect",
                      config=DetectConfig(threshold=0.0, nms_iou=None, max_detections=5), device=device,
                      precision="fp32")
    with open_store(run_dir) as store:
        summary = label_into_store(labeler, [photos], store, batch_size=4)
        assert summary.failed == 0, summary.failures
        return {Path(img.path).name: store.labels(img.id) for img in store.images()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="the side compared with the CPU (default cuda)")
    device = parser.parse_args(argv).device
    import torch

    from autolabel.geometry import mask_iou, rle_to_mask
    from autolabel.testing.owlv2_checkpoint import build_owlv2_checkpoint
    from autolabel.testing.photos import synthetic_photo
    from autolabel.testing.sam2_checkpoint import build_sam2_checkpoint

    # TF32 convolutions would move random-weight outputs far more than the engine could.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        owl = build_owlv2_checkpoint(tmp / "owl", image_size=960)
        sam = build_sam2_checkpoint(tmp / "sam")
        photos = tmp / "photos"
        photos.mkdir()
        for i, (w, h) in enumerate([(4000, 3000), (1920, 1080), (640, 480), (300, 500)]):
            synthetic_photo(w, h, seed=i).save(photos / f"{i}.jpg", quality=90)
        for mode, seg in (("detect", None), ("segment", sam)):
            cpu = _run(photos, tmp / f"cpu-{mode}", owl, seg, "cpu")
            gpu = _run(photos, tmp / f"{device}-{mode}-compared", owl, seg, device)
            box_diff = max(float(np.abs(cpu[k].xyxy - gpu[k].xyxy).max(initial=0)) for k in cpu)
            same_classes = all(np.array_equal(cpu[k].class_ids, gpu[k].class_ids) for k in cpu)
            ious = [mask_iou(rle_to_mask(a), rle_to_mask(b)) for k in cpu if cpu[k].masks
                    for a, b in zip(cpu[k].masks, gpu[k].masks)]
            iou = f", mask IoU min {min(ious):.4f}" if ious else ""
            good = box_diff < 0.5 and same_classes and (not ious or min(ious) > 0.95)
            ok &= good
            print(f"{device} parity {mode}: max box difference {box_diff:.4f} px, same classes {same_classes}{iou}"
                  f" -> {'ok' if good else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
