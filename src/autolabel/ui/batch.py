"""The Batch tab's engine: one labelling run at a time in a background thread, into a run folder
under the runs root, through ``labeling.label_into_store`` like the CLI. The job lives in the server:
a refreshed page finds it running; a finished run is a store like any CLI run (resume, review, export).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from autolabel.errors import AutolabelError, ConfigError
from autolabel.ontology import Ontology
from autolabel.ui.runs import read_sidecar, run_dir, write_sidecar
from autolabel.ui.security import images_inside, sanitize_filename, sanitize_run_name, unique_child
from autolabel.ui.session import ModelHandles, UiConfig, make_labeler

log = logging.getLogger(__name__)

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


class BatchStopped(Exception):
    """Raised from the progress callback when the user stops the run: the labelling loop commits
    the batches it finished and ends."""


@dataclass
class BatchJob:
    """Progress of one run. ``processed`` counts finished images (labelled or failed) this job;
    ``refused`` the images left out because their links lead outside the allowed folders."""

    run: str
    run_dir: Path
    image_size: str | None
    started: float = field(default_factory=time.perf_counter)
    total: int | None = None
    processed: int = 0
    finished: float | None = None
    error: str | None = None
    summary: object = None
    zip_path: Path | None = None
    refused: list[Path] = field(default_factory=list)
    stop_requested: bool = False
    stopped: bool = False
    thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.finished is None

    @property
    def elapsed(self) -> float:
        return (self.finished or time.perf_counter()) - self.started

    @property
    def images_per_second(self) -> float:
        return self.processed / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at the rate so far (None until an image is done)."""
        if not self.running or self.total is None or not self.processed:
            return None
        return max(self.total - self.processed, 0) / self.images_per_second

    def status_text(self) -> str:
        total = "?" if self.total is None else self.total
        rate = f"{self.images_per_second:.2f} images/s"
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


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min``, ``2 h 05 min``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class BatchRunner:
    """Starts and tracks batch jobs (one at a time)."""

    def __init__(self, config: UiConfig, models: ModelHandles):
        self.config = config
        self.models = models
        self._lock = threading.Lock()
        self._jobs: dict[str, BatchJob] = {}
        self._current: BatchJob | None = None

    def current(self) -> BatchJob | None:
        """The running job, else the last one started."""
        return self._current

    def job(self, run: str | None) -> BatchJob | None:
        return self._jobs.get(run) if run else None

    def start_new(self, run_name: str | None, prompts_ontology: Ontology, mode: str, threshold: float,
                  uploads: list[str] | None, folders: list[Path] | None, image_size: str | None) -> BatchJob:
        """Start labelling uploads and/or server folders into run ``run_name`` (new, or the same set-up)."""
        self._check_idle()
        name = sanitize_run_name(run_name) if run_name and run_name.strip() else time.strftime("ui-%Y%m%d-%H%M%S")
        if not uploads and not folders:
            raise ConfigError("add images: upload files or enter a folder on the server")
        _check_size(image_size)  # fails now, not after the run or with a half-made run folder
        labeler = make_labeler(self.config, self.models, prompts_ontology, mode, threshold)
        folder = run_dir(self.config.runs_dir, name)
        from autolabel.store import open_store

        # Refuse a run folder made with another set-up before copying anything into it.
        with open_store(folder) as store:
            store.bind_config(labeler.run_config())
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
                               detect=stored.get("detect"), model=str(stored["model"]))
        inputs = [Path(p) for p in read_sidecar(folder).get("inputs", []) if Path(p).exists()]
        if not inputs:
            raise ConfigError(f"run {run} has no images the UI can find: it was made on the command line, or its "
                              "folders are gone")
        return self._start(run, folder, labeler, inputs, image_size)

    def stop(self) -> BatchJob | None:
        """Ask the running job to stop after the batch in progress (what is done stays; Resume
        continues). Returns the current job."""
        job = self._current
        if job is not None and job.running:
            job.stop_requested = True
        return job

    def _check_idle(self) -> None:
        job = self._current
        if job is not None and job.running:
            raise ConfigError(f"batch {job.run} is still running: wait for it to finish or stop it")

    def _start(self, name: str, folder: Path, labeler, inputs: list[Path], image_size: str | None) -> BatchJob:
        # Links that lead out of the allowed folders (or out of the run's uploads) are left out and reported.
        inputs, refused = images_inside(inputs, [*self.config.allow_folders, folder / UPLOADS])
        if not inputs and refused:
            raise ConfigError(f"every image links outside the allowed folders ({len(refused)} left out)")
        with self._lock:
            self._check_idle()
            job = BatchJob(name, folder, image_size or None, refused=refused)
            job.thread = threading.Thread(target=self._run, args=(job, labeler, inputs), name=f"batch-{name}",
                                          daemon=True)
            self._jobs[name] = job
            self._current = job
            job.thread.start()
        return job

    def _run(self, job: BatchJob, labeler, inputs: list[Path]) -> None:
        from autolabel.labeling import label_into_store
        from autolabel.store import open_store
        from autolabel.ui.downloads import export_dir
        from autolabel.ui.exporting import run_export

        def on_total(n: int) -> None:
            job.total = n
            if job.stop_requested:
                raise BatchStopped

        def on_progress(k: int) -> None:
            job.processed += k
            if job.stop_requested:
                raise BatchStopped

        try:
            with open_store(job.run_dir) as store:
                job.summary = label_into_store(labeler, inputs, store, batch_size=self.config.batch_size,
                                               max_pixels=self.config.max_image_pixels,
                                               on_total=on_total, on_progress=on_progress)
                # The batch's download: the run as one COCO ZIP (``autolabel export --zip``).
                job.zip_path = run_export(store, "coco", export_dir(self.config.work_dir, job.run),
                                          image_size=job.image_size, zip_name=f"{job.run}_coco.zip",
                                          max_pixels=self.config.max_image_pixels).path
        except BatchStopped:
            job.stopped = True
        except AutolabelError as exc:
            job.error = str(exc)
        except Exception as exc:  # a bug: keep the traceback in the log, a line in the UI
            log.exception("batch %s failed", job.run)
            job.error = f"unexpected {type(exc).__name__}: {exc}"
        finally:
            job.finished = time.perf_counter()


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
