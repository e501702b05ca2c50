"""``autolabel ui``: the web UI (Test, Batch, Review and Export tabs) on http://127.0.0.1:7860."""

from __future__ import annotations

import click

from autolabel.cli.errors import handle_errors
from autolabel.models.precision import PRECISIONS


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but 127.0.0.1/localhost exposes the UI: set AUTOLABEL_UI_AUTH.")
@click.option("--port", type=int, default=7860, show_default=True, help="Port to listen on.")
@click.option("--model", default=None, help="OWLv2 checkpoint: hub id or local dir [env AUTOLABEL_MODEL].")
@click.option("--sam-model", default=None, help="SAM2 checkpoint for segment mode [env AUTOLABEL_SAM_MODEL].")
@click.option("--runs-dir", default=None, type=click.Path(file_okay=False),
              help="Runs root: every batch is a run folder in it; CLI runs placed there are listed "
                   "[env AUTOLABEL_RUNS_DIR, default ./runs].")
@click.option("--allow-folder", "allow_folders", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Let the Batch tab read image folders inside DIR on this server. Repeatable; off by default.")
@click.option("--models-dir", type=click.Path(exists=True, file_okay=False),
              help="A folder of checkpoint folders (each with a config.json) the UI's model picker also lists.")
@click.option("--device", default=None, help="auto, cpu, cuda, cuda:N or mps [env AUTOLABEL_DEVICE].")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None,
              help="Model precision: auto (fp16 on CUDA, fp32 elsewhere), fp32, bf16, fp16 (GPU), int8 (CPU) "
                   "[env AUTOLABEL_PRECISION].")
@click.option("--threshold", type=float, default=None, help="Initial score threshold (default 0.1).")
@click.option("--batch-size", type=int, default=None, help="Images per forward pass in batches (default 4).")
@click.option("--max-file-size", default="200mb", show_default=True, help="Largest upload, e.g. 50mb or 2gb.")
@click.option("--max-work-size", default="20gb", show_default=True,
              help="Space for uploads and downloads in the UI's temporary folder; old files are pruned, then "
                   "uploads are refused.")
@handle_errors
def ui(host, port, model, sam_model, runs_dir, allow_folders, models_dir, device, precision, threshold, batch_size,
       max_file_size, max_work_size):
    """Start the web UI. Models load on first use.

    \b
    Examples:
      autolabel ui
      autolabel ui --model ./owlv2-base --sam-model ./sam2.1-hiera-tiny --runs-dir ~/runs
      autolabel ui --allow-folder /data/photos            # batches may read folders under /data/photos
      autolabel ui --models-dir ~/checkpoints             # the model picker lists the checkpoints in it
      AUTOLABEL_UI_AUTH=me:secret autolabel ui --host 0.0.0.0 --port 8080

    The UI binds 127.0.0.1 unless --host says otherwise and never opens a public share link. Set
    AUTOLABEL_UI_AUTH=user:password (or ui_auth in .env) to require a login (five failed tries lock a
    client out for a minute, then longer). Beyond this machine, serve it over HTTPS through a reverse
    proxy (nginx, Caddy) that forwards the Host header.
    """
    import shutil
    import signal
    import tempfile
    from pathlib import Path

    from autolabel.errors import ConfigError
    from autolabel.settings import load_settings
    from autolabel.ui.guard import parse_size
    from autolabel.ui.security import parse_auth, prepare_gradio_environment, warn_if_exposed
    from autolabel.ui.session import UiConfig

    settings = load_settings(model=model, sam_model=sam_model, device=device, precision=precision, threshold=threshold,
                             batch_size=batch_size, runs_dir=runs_dir)
    auth = parse_auth(settings.ui_auth)
    parse_size(max_work_size)  # a typo fails before the server starts
    warning = warn_if_exposed(host, auth)
    if warning:
        click.echo(f"warning: {warning}", err=True)
    runs_root = Path(settings.runs_dir).expanduser().resolve()
    runs_root.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="autolabel-ui-")).resolve()
    prepare_gradio_environment(work_dir)  # before Gradio is imported: some of its modules read it then
    from autolabel.ui.app import launch
    config = UiConfig(
        model=settings.model, sam_model=settings.sam_model, runs_dir=runs_root, work_dir=work_dir,
        device=settings.device, precision=settings.precision, threshold=settings.threshold, nms_iou=settings.nms_iou,
        batch_size=settings.batch_size, max_image_pixels=settings.max_image_pixels,
        allow_folders=tuple(Path(p).resolve() for p in allow_folders),
        models_dir=Path(models_dir).resolve() if models_dir else None,
    )
    click.echo(f"autolabel UI on http://{'[' + host + ']' if ':' in host else host}:{port}"
               f"  (runs: {runs_root}; login {'on' if auth else 'off'}; Ctrl-C to stop)")
    # SIGTERM (a service manager, `kill`) stops the server like Ctrl-C, so the work folder with its
    # uploads and exports is removed below instead of left behind.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        launch(config, host=host, port=port, auth=auth, max_file_size=max_file_size, max_work_size=max_work_size)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM while the server starts: a normal stop, nothing to resume
        pass
    except OSError as exc:  # e.g. the port is taken
        raise ConfigError(f"cannot start the UI on {host}:{port}: {str(exc).splitlines()[0]}") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(work_dir, ignore_errors=True)


def _interrupt(signum, frame):
    raise KeyboardInterrupt
