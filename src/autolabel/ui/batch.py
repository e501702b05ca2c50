"""The Batch tab's engine: one job at a time in a background thread, into a run folder under the
runs root: a labelling run through ``labeling.label_into_store`` like the CLI, or a relabel of a
finished run through ``relabel.relabel_run`` like ``autolabel relabel``. The job lives in the server:
a refreshed page finds it running; a finished run is a store like any CLI run (resume, review, export).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from autolabel.errors import AutolabelError, ConfigError
from autolabel.ontology import Ontology
from autolabel.tiling import tiling_from_dict
from autolabel.ui.jobs import Job, JobRunner, format_duration
from autolabel.ui.runs import read_sidecar, run_dir, write_sidecar
from autolabel.ui.security import (
    RUN_NAME_LENGTH, sanitize_filename, sanitize_run_name, unique_child,
)
from autolabel.ui.session import ModelHandles, UiConfig, make_labeler

UPLOADS = "uploads"


def copy_uploads(files: list[str], dest: Path) -> list[Path]:
    """Copy uploaded files into ``dest`` under sanitized names; the client's names never choose a
    path. A file already there with the same name and content is reused (re-uploading to resume)."""
    from autolabel.images import file_sha256

    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for src in files:
        src = Path(src)
        name = sanitize_filename(src.name)
        target = dest / name
        if target.exists():
            try:
                if file_sha256(target) == file_sha256(src):
                    out.append(target)
                    continue
            except AutolabelError:
                pass
            target = unique_child(dest, name)
        shutil.copyfile(src, target)
        out.append(target)
    return out


@dataclass
class BatchJob(Job):
    """Progress of one run. ``processed`` counts finished images (labelled or failed) this job;
    ``refused`` the images left out because their links lead outside the allowed folders (known when
    the run finishes)."""

    run_dir: Path
    image_size: str | None
    zip_path: Path | None = None
    refused: list[Path] = field(default_factory=list)

    def status_text(self) -> str:
        total = "?" if self.total is None else self.total
        rate = f"{self.per_second:.2f} images/s"
        if self.error:
            return f"run {self.run}: stopped: {self.error}"
        if self.running:
            if self.stop_requested:
                return f"run {self.run}: {self.processed}/{total} images · stopping after the current batch…"
            eta = self.eta_seconds
            left = f" · about {format_duration(eta)} left" if eta is not None else ""
            return f"run {self.run}: {self.processed}/{total} images · {rate}{left}"
        s = self.summary
        skipped = f", {s.skipped} already done" if s is not None and s.skipped else ""
        failed = f", {s.failed} failed" if s is not None and s.failed else ""
        refused = f", {len(self.refused)} left out" if self.refused else ""
        if self.stopped:
            return (f"run {self.run}: stopped after {self.processed}/{total} images{failed}; "
                    "Resume continues where it stopped")
        return (f"run {self.run}: finished {self.processed}/{total} images{failed}{skipped}{refused} in "
                f"{self.elapsed:.1f} s · {rate}")


class BatchRunner(JobRunner):
    """Starts and tracks batch jobs (one at a time)."""

    busy = "batch {run} is still running: wait for it to finish or stop it"
    kind = "batch"

    def __init__(self, config: UiConfig, models: ModelHandles):
        super().__init__()
        self.config = config
        self.models = models

    def start_new(self, run_name: str | None, prompts_ontology: Ontology, mode: str, threshold: float,
                  uploads: list[str] | None, folders: list[Path] | None, image_size: str | None,
                  tiles: str | None = None) -> BatchJob:
        """Start labelling uploads and/or server folders into run ``run_name`` (new, or the same set-up);
        ``tiles``: ``"off"`` or ``"auto"`` (``Labeler(tiles=...)``)."""
        from autolabel.labeling import resolve_keep_candidates, run_config
        from autolabel.store import open_store
        from autolabel.video.store import is_video_run

        self._check_idle()
        name = sanitize_run_name(run_name) if run_name and run_name.strip() else time.strftime("ui-%Y%m%d-%H%M%S")
        if not uploads and not folders:
            raise ConfigError("add images: upload files or enter a folder on the server")
        _check_size(image_size)  # fails now, not after the run or with a half-made run folder
        labeler = make_labeler(self.config, self.models, prompts_ontology, mode, threshold, tiles=tiles)
        folder = run_dir(self.config.runs_dir, name)
        if is_video_run(folder):
            raise ConfigError(f"run {name!r} is a video run (Video tab): pick another name")
        # Refuse a run folder made with another set-up before copying anything into it; the same
        # configuration the labelling loop binds (with kept candidates, so the run can be relabelled).
        with open_store(folder) as store:
            store.bind_config(run_config(labeler, resolve_keep_candidates(labeler, store, None)))
        inputs: list[Path] = []
        if uploads:
            inputs += copy_uploads(uploads, folder / UPLOADS)
        inputs += list(folders or [])
        sidecar_inputs = ([str((folder / UPLOADS).resolve())] if uploads else []) + [str(f) for f in folders or []]
        previous = read_sidecar(folder).get("inputs", []) if folder.exists() else []
        write_sidecar(folder, {"inputs": sorted(set(previous) | set(sidecar_inputs))})
        return self._start(name, folder, labeler, inputs, image_size)

    def resume(self, run: str, image_size: str | None) -> BatchJob:
        """Label what a run has not done yet (its stored configuration and recorded inputs)."""
        from autolabel.store import open_store

        self._check_idle()
        _check_size(image_size)
        folder = run_dir(self.config.runs_dir, run)
        with open_store(folder, create=False) as store:
            stored = store.config
        if not stored:
            raise ConfigError(f"run {run} has no configuration yet")
        try:  # the run's own detector, when the picker lists it, whatever is selected now
            self.models.catalog.checkpoint(str(stored.get("model")))
        except ConfigError:
            raise ConfigError(f"run {run} was made with a detection model this UI does not list "
                              f"({_model_name(stored.get('model'))}): it cannot be resumed here") from None
        if stored.get("mode") == "segment" and stored.get("sam_model") != self.models.sam_model:
            raise ConfigError(f"run {run} was made with another segmentation model "
                              f"({_model_name(stored.get('sam_model'))}) than this UI serves "
                              f"({_model_name(self.models.sam_model)}): it cannot be resumed here")
        labeler = make_labeler(self.config, self.models, Ontology.from_data(stored["ontology"]), stored["mode"], 0.0,
                               detect=stored.get("detect"), model=str(stored["model"]),
                               tiles=tiling_from_dict(stored.get("tiles")))
        inputs = [Path(p) for p in read_sidecar(folder).get("inputs", []) if Path(p).exists()]
        if not inputs:
            raise ConfigError(f"run {run} has no images the UI can find: it was made on the command line, or its "
                              "folders are gone")
        return self._start(run, folder, labeler, inputs, image_size)

    def _start(self, name: str, folder: Path, labeler, inputs: list[Path], image_size: str | None) -> BatchJob:
        # The run lists the folders once; links that lead out of the allowed folders (or out of the
        # run's uploads) are left out there and reported (``label_into_store(within=...)``).
        within = [Path(root).resolve() for root in (*self.config.allow_folders, folder / UPLOADS)]
        job = BatchJob(name, folder, image_size or None)
        return self._launch(job, self._run, labeler, inputs, within)

    def relabel(self, run: str, ontology: Ontology, threshold: float) -> BatchJob:
        """Re-score the finished run ``run`` from its kept candidates with ``ontology`` and
        ``threshold`` into a new run ``<run>-relabel-N`` (``relabel.relabel_run``)."""
        from autolabel.pipeline import DetectConfig
        from autolabel.store import open_store

        self._check_idle()
        source = run_dir(self.config.runs_dir, run)
        with open_store(source, create=False) as store:
            stored = store.config
        why_not = relabel_refusal(stored)
        if why_not:
            raise ConfigError(f"run {run} {why_not}")
        name = relabel_name(self.config.runs_dir, run)
        config = DetectConfig(threshold=float(threshold), nms_iou=self.config.nms_iou)
        job = BatchJob(name, run_dir(self.config.runs_dir, name), None)
        return self._launch(job, self._relabel, source, ontology, config, str(stored["model"]))

    def _run(self, job: BatchJob, on_total, on_progress, labeler, inputs: list[Path], within: list[Path]) -> None:
        from autolabel.labeling import label_into_store
        from autolabel.store import open_store
        from autolabel.ui.downloads import export_dir
        from autolabel.ui.exporting import run_export

        with open_store(job.run_dir) as store:
            job.summary = label_into_store(labeler, inputs, store, batch_size=self.config.batch_size,
                                           max_pixels=self.config.max_image_pixels,
                                           on_total=on_total, on_progress=on_progress, within=within)
            job.refused = [Path(p) for p in job.summary.refused]
            # The batch's download: the run as one COCO ZIP (``autolabel export --zip``).
            job.zip_path = run_export(store, "coco", export_dir(self.config.work_dir, job.run),
                                      image_size=job.image_size, zip_name=f"{job.run}_coco.zip",
                                      max_pixels=self.config.max_image_pixels).path

    def _relabel(self, job: BatchJob, on_total, on_progress, source: Path, ontology: Ontology, config,
                 model: str) -> None:
        from autolabel.relabel import relabel_run

        job.summary = relabel_run(source, job.run_dir, ontology, config, on_total=on_total, on_progress=on_progress,
                                  detector=self._listed_detector(model))

    def _listed_detector(self, checkpoint: str):
        """The UI's loaded (or now loaded) detector of ``checkpoint`` when the picker lists it under
        that name; None otherwise (a relabel then loads its own copy)."""
        try:
            listed = self.models.checkpoint(checkpoint) == checkpoint
        except ConfigError:
            return None
        return self.models.detector_for(checkpoint) if listed else None


def relabel_refusal(config: dict | None) -> str | None:
    """Why a run with this stored configuration cannot be relabelled (a phrase after "run X"), or
    None when it can: only labelling runs that kept their candidates can."""
    if not config or config.get("mode") not in ("detect", "segment"):
        return "is not a labelling run: only labelled runs can be relabelled"
    if not config.get("keep_candidates"):
        return ("was labelled without kept candidates (an OWLv2 detector keeps them): label it again to "
                "relabel it")
    return None


def relabel_name(runs_dir: Path, run: str) -> str:
    """The first free ``<run>-relabel-N`` under ``runs_dir`` (``run`` shortened to fit a run name)."""
    n = 1
    while True:
        suffix = f"-relabel-{n}"
        name = sanitize_run_name(run[: RUN_NAME_LENGTH - len(suffix)] + suffix)
        if not run_dir(runs_dir, name).exists():
            return name
        n += 1


def failed_images(store, refused: list[Path] = (), limit: int = 500) -> list[tuple[str, str]]:
    """``(file name, reason)`` for the run's failed images (at most ``limit``), then the images left
    out of this job; names only, no server paths."""
    rows = [(Path(r.path).name, r.error or "failed") for r in store.images("failed")][:limit]
    return rows + [(p.name, "links outside the allowed folders") for p in refused][: max(limit - len(rows), 0)]


def _model_name(model: str | None) -> str:
    return Path(str(model)).name or str(model)


def _check_size(image_size: str | None) -> None:
    from autolabel.export.package import ImageSize

    ImageSize.parse((image_size or "").strip() or None)
