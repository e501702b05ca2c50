#!/usr/bin/env python
"""Peak memory of `--mode track` over a long 1080p clip: does RSS level off as the clip goes on?

Generates a clip of three coloured rectangles (30 fps, MPEG-4; `--minutes` long), builds the tiny
random SAM2 video checkpoint, finds the rectangles with the colour detector on the first frame and
lets SAM2 carry them through every labelled frame (`--fps`), sampling RSS (/proc/self/statm) every
2 s. Prints RSS at 10/25/50/75/100% of the run and its peak.

Example:
  python benchmarks/video_memory.py --minutes 10 --fps 1
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from autolabel.cli.video import label_videos  # noqa: E402
from autolabel.geometry import Size  # noqa: E402
from autolabel.ontology import Ontology  # noqa: E402
from autolabel.pipeline import Labeler  # noqa: E402
from autolabel.testing.sam2_video_checkpoint import build_sam2_video_checkpoint  # noqa: E402
from autolabel.testing.video_scenes import (BLUE, CLASSES_RGB, GREEN, ONTOLOGY_RGB, RED, ColorDetector,  # noqa: E402
                                            Scene, Shape, write_clip)
from autolabel.models.sam2_video import Sam2VideoPropagator  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--fps", type=float, default=1.0, help="frames labelled per second of video")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        frames = int(args.minutes * 60 * 30)
        scene = Scene(Size(1920, 1080), (Shape(RED, 100, 100, 200, 150), Shape(GREEN, 800, 400, 120, 120),
                                         Shape(BLUE, 1500, 700, 200, 100)), frames)
        started = time.perf_counter()
        clip = write_clip(tmp / "clip.mp4", scene, codec="mpeg4", rate=30, gop=60)
        print(f"clip: {frames} frames of 1920x1080 in {time.perf_counter() - started:.0f} s")
        loaded = Sam2VideoPropagator.from_pretrained(str(build_sam2_video_checkpoint(tmp / "sam2-video")), "cpu", "fp32")
        labeler = Labeler(Ontology.from_prompts(list(ONTOLOGY_RGB)), detector=ColorDetector(CLASSES_RGB))
        samples: list[float] = []

        def watch() -> None:
            while True:
                samples.append(rss_mb())
                time.sleep(2)

        threading.Thread(target=watch, daemon=True).start()
        started = time.perf_counter()
        [(_, summary)] = label_videos([clip], tmp / "run", labeler, video_fps=args.fps, keyframe_every=10**9,
                                      make_propagator=loaded.fresh, quiet=True, echo=lambda *a, **k: None)
        seconds = time.perf_counter() - started
    points = [samples[min(int(len(samples) * f), len(samples) - 1)] for f in (0.1, 0.25, 0.5, 0.75, 1.0)]
    print(f"{summary.frames} frames labelled, {summary.tracks} tracks in {seconds:.0f} s; RSS MB at "
          f"10/25/50/75/100%: {' / '.join(f'{p:.0f}' for p in points)}; peak {max(samples):.0f}")


if __name__ == "__main__":
    main()
