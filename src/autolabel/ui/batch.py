"""The Batch tab's engine: a labelling run in a background thread, into a run folder under the runs
root, through the same ``labeling.label_into_store`` and store the CLI uses.

The job lives in the server, not in the browser: a refresh (or a second tab) finds it running and
follows its progress; when it finishes, the run is in the store like any CLI run, so it can be
resumed (finished images are skipped), reviewed and exported. One job runs at a time: it shares the
one loaded model with the Test tab.
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
from autolabel.ui.security import sanitize_filename, sanitize_run_name, unique_child
from autolabel.ui.session import ModelHandles, UiConfig

log = logging.getLogger(__name__)

UPLOADS = "uploads"


def default_run_name() -> str:
    return time.strftime("ui-%Y%m%d-%H%M%S")


def make_labeler(config: UiConfig, models: ModelHandles, ontology: Ontology, mode: str, threshold: float,
                 detect: dict | None = None):
    """A ``Labeler`` that uses the UI's already loaded (shared) models.

    ``detect``: a stored ``DetectConfig`` dict (resuming a run); otherwise the UI's threshold and
    the configured NMS IoU. Loads the models now, so a load failure is reported at once.
    """
    from autolabel.pipeline import DetectConfig, Labeler

    detect_config = DetectConfig(**detect) if detect else DetectConfig(threshold=float(threshold), nms_iou=config.nms_iou)
    return Labeler(ontology, detector=models.detector, segmenter=models.segmenter if mode == "segment" else None,
                   mode=mode, config=detect_config)


def labeler_for_run(config: UiConfig, models: ModelHandles, stored: dict):
    """Rebuild the ``Labeler`` a run was made with (to resume it); refuses another model."""
    if stored.get("model") != models.model:
        raise ConfigError(f"this run was made with model {stored.get('model')!r} but the UI serves {models.model!r}: "
                          "resume it with `autolabel label`, or start the UI with that --model")
    if stored.get("mode") == "segment" and stored.get("sam_model") != models.sam_model:
        raise ConfigError(f"this run was made with SAM2 model {stored.get('sam_model')!r} but the UI serves "
                          f"{models.sam_model!r}: resume it with `autolabel label`, or start the UI with that --sam-model")
    ontology = Ontology.from_data(stored["ontology"])
    return make_labeler(config, models, ontology, stored["mode"], 0.0, detect=stored.get("detect"))


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
class BatchJob:
    """Progress of one run. ``processed`` counts finished images (labelled or failed) this job."""

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

    def status_text(self) -> str:
        total = "?" if self.total is None else self.total
        rate = f"{self.images_per_second:.2f} images/s"
        if self.error:
            return f"run {self.run}: stopped: {self.error}"
        if self.running:
            return f"run {self.run}: {self.processed}/{total} images · {rate}"
        s = self.summary
        skipped = f", {s.skipped} already done" if s is not None and s.skipped else ""
        failed = f", {s.failed} failed" if s is not None and s.failed else ""
        return f"run {self.run}: finished {self.processed}/{total} images{failed}{skipped} in {self.elapsed:.1f} s · {rate}"

    @property
    def fraction(self) -> float:
        if not self.total:
            return 0.0 if self.running else 1.0
        return min(1.0, self.processed / self.total)


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
        name = sanitize_run_name(run_name) if run_name and run_name.strip() else default_run_name()
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
        labeler = labeler_for_run(self.config, self.models, stored)
        inputs = [Path(p) for p in read_sidecar(folder).get("inputs", []) if Path(p).exists()]
        if not inputs:
            raise ConfigError(f"run {run} has no inputs the UI can find (runs made by the CLI resume with the same "
                              "`autolabel label` command)")
        return self._start(run, folder, labeler, inputs, image_size)

    def _check_idle(self) -> None:
        job = self._current
        if job is not None and job.running:
            raise ConfigError(f"batch {job.run} is still running: wait for it to finish")

    def _start(self, name: str, folder: Path, labeler, inputs: list[Path], image_size: str | None) -> BatchJob:
        with self._lock:
            self._check_idle()
            job = BatchJob(name, folder, image_size or None)
            job.thread = threading.Thread(target=self._run, args=(job, labeler, inputs), name=f"batch-{name}",
                                          daemon=True)
            self._jobs[name] = job
            self._current = job
            job.thread.start()
        return job

    def _run(self, job: BatchJob, labeler, inputs: list[Path]) -> None:
        from autolabel.labeling import label_into_store
        from autolabel.store import open_store

        def on_total(n: int) -> None:
            job.total = n

        def on_progress(k: int) -> None:
            job.processed += k

        try:
            with open_store(job.run_dir) as store:
                job.summary = label_into_store(labeler, inputs, store, batch_size=self.config.batch_size,
                                               max_pixels=self.config.max_image_pixels,
                                               on_total=on_total, on_progress=on_progress)
                job.zip_path = build_zip(store, self.config.work_dir, job.run, job.image_size,
                                         self.config.max_image_pixels)
        except AutolabelError as exc:
            job.error = str(exc)
        except Exception as exc:  # a bug: keep the traceback in the log, a line in the UI
            log.exception("batch %s failed", job.run)
            job.error = f"unexpected {type(exc).__name__}: {exc}"
        finally:
            job.finished = time.perf_counter()


def _check_size(image_size: str | None) -> None:
    from autolabel.export.package import ImageSize

    ImageSize.parse((image_size or "").strip() or None)


def export_dir(work_dir: Path, run: str) -> Path:
    """A fresh folder for one export of ``run`` inside the UI's work folder (older ones pruned)."""
    import tempfile

    from autolabel.ui.downloads import EXPORTS, prune_exports

    prune_exports(work_dir)
    base = Path(work_dir) / EXPORTS
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{run}-", dir=base))


def build_zip(store, work_dir: Path, run: str, image_size: str | None, max_pixels: int,
              fmt: str = "coco", masks: str = "polygon") -> Path:
    """Export ``store`` as one ZIP (same layout as ``autolabel export --zip``) in the work folder."""
    from autolabel.ui.exporting import run_export

    return run_export(store, fmt, export_dir(work_dir, run), image_size=image_size, masks=masks,
                      zip_name=f"{run}_{fmt}.zip", max_pixels=max_pixels).path
