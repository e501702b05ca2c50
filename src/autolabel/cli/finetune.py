"""``autolabel finetune``: fine-tune OWLv2 on reviewed labels (a run folder) or a COCO file."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from autolabel.cli.errors import handle_errors
from autolabel.finetune.config import DEFAULT_LR, MAX_WARMUP_STEPS, MODES, PRECISIONS, TEXT_LR_DIVISOR, TrainConfig
from autolabel.finetune.data import LABEL_POLICIES, AugmentConfig, load_examples

DEFAULTS = TrainConfig()


def _negatives(value: str | None):
    """None: the built-in vocabulary; "none": no vocabulary negatives; a file: one name per line;
    else a comma-separated list."""
    if value is None:
        return None
    if value.strip().lower() == "none":
        return ()
    path = Path(value)
    names = path.read_text(encoding="utf-8").splitlines() if path.is_file() else value.split(",")
    return tuple(n.strip() for n in names if n.strip())


@click.command()
@click.option("--train", "train_source", required=True, type=click.Path(exists=True),
              help="Training data: a run folder (reviewed labels preferred) or a COCO .json file.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: a checkpoint usable with --model (re-use it to resume).")
@click.option("--val", "val_source", type=click.Path(exists=True), default=None,
              help="Validation data (COCO .json or run folder): mAP during training, keep-best.")
@click.option("--steps", type=int, default=DEFAULTS.steps, show_default=True, help="Optimizer steps.")
@click.option("--model", default=None,
              help="Starting checkpoint [default: the run's model for a run folder, else AUTOLABEL_MODEL].")
@click.option("--mode", type=click.Choice(MODES), default=DEFAULTS.mode, show_default=True,
              help="heads: cheap mode, train the class/box heads on cached image features (CPU friendly).")
@click.option("--images", "images_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Image folder of a COCO --train file (default: beside the file, or its images/).")
@click.option("--val-images", "val_images_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Image folder of a COCO --val file.")
@click.option("--labels", type=click.Choice(LABEL_POLICIES), default=LABEL_POLICIES[0], show_default=True,
              help="Run folder labels: reviewed images only, or all images (model labels above --min-score); "
                   "auto = reviewed if there are any.")
@click.option("--min-score", type=float, default=0.3, show_default=True, help="Score floor of unreviewed model labels.")
@click.option("--prompt", "prompts", multiple=True, help='Prompts of a COCO class: "car=car,automobile". Repeatable.')
@click.option("--ontology", "ontology_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Prompts of the COCO classes from a YAML/JSON ontology.")
@click.option("--batch-size", type=int, default=DEFAULTS.batch_size, show_default=True)
@click.option("--grad-accum", type=int, default=DEFAULTS.grad_accum, show_default=True,
              help="Micro-batches per optimizer step.")
@click.option("--lr", type=float, default=None,
              help=f"Vision tower + heads learning rate [{DEFAULT_LR['full']:g} full, {DEFAULT_LR['heads']:g} heads].")
@click.option("--text-lr", type=float, default=None,
              help=f"Text tower learning rate [lr / {TEXT_LR_DIVISOR}; 0 freezes it].")
@click.option("--weight-decay", type=float, default=DEFAULTS.weight_decay, show_default=True)
@click.option("--warmup", "warmup_steps", type=int, default=None,
              help=f"Warm-up steps [steps / 10, at most {MAX_WARMUP_STEPS}].")
@click.option("--freeze-vision", is_flag=True, help="Do not train the vision tower.")
@click.option("--freeze-text", is_flag=True, help="Do not train the text tower.")
@click.option("--num-negatives", type=int, default=DEFAULTS.num_negatives, show_default=True,
              help="Negative queries per image.")
@click.option("--negatives", default=None,
              help="Negative names: comma list, a file (one per line), or 'none' [a built-in list of common objects].")
@click.option("--no-augment", is_flag=True, help="No flips or crops.")
@click.option("--cache-views", type=int, default=DEFAULTS.cache_views, show_default=True,
              help="Cheap mode: cached views per image.")
@click.option("--val-every", type=int, default=DEFAULTS.val_every, show_default=True,
              help="Validate every N steps (0: at the end).")
@click.option("--save-every", type=int, default=DEFAULTS.save_every, show_default=True,
              help="Resumable checkpoint every N steps.")
@click.option("--ensemble-alpha", type=float, default=None,
              help="Output alpha*fine-tuned + (1-alpha)*starting weights, e.g. 0.5: keeps open-vocabulary generality.")
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True)
@click.option("--device", default=None, help="auto, cpu, cuda, cuda:N or mps [env AUTOLABEL_DEVICE].")
@click.option("--precision", type=click.Choice(PRECISIONS), default=DEFAULTS.precision, show_default=True,
              help="auto: bf16 autocast on CUDA (fp16 where bf16 is unsupported), fp32 elsewhere.")
@click.option("--gradient-checkpointing", is_flag=True, help="Less GPU memory, slower steps (full mode).")
@click.option("--workers", type=int, default=DEFAULTS.workers, show_default=True,
              help="Image loading threads.")
@click.option("--keep-state", is_flag=True, help="Keep OUT/train_state (optimizer, caches) after finishing.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@handle_errors
def finetune(train_source, out_dir, val_source, steps, model, mode, images_dir, val_images_dir, labels, min_score,
             prompts, ontology_file, batch_size, grad_accum, lr, text_lr, weight_decay, warmup_steps, freeze_vision,
             freeze_text, num_negatives, negatives, no_augment, cache_views, val_every, save_every, ensemble_alpha,
             seed, device, precision, gradient_checkpointing, workers, keep_state, quiet):
    """Fine-tune OWLv2 on reviewed labels and write a checkpoint to --out.

    \b
    Examples:
      autolabel finetune --train runs/street --val gt_val.json --out models/street-owlv2 --steps 400
      autolabel finetune --train export/coco_export.json --out models/cheap --mode heads --steps 300
      autolabel label photos/ --out runs/relabel --model models/street-owlv2 --prompt car
      autolabel eval runs/relabel --gt gt_val.json

    Re-running the same command resumes an interrupted run from its last checkpoint.
    """
    from tqdm import tqdm

    from autolabel.errors import ConfigError
    from autolabel.finetune.train import finetune as run_finetune
    from autolabel.ontology import Ontology
    from autolabel.settings import load_settings

    settings = load_settings(model=model, device=device)
    if prompts and ontology_file:
        raise ConfigError("give class prompts with --prompt or --ontology, not both")
    ontology = Ontology.from_prompts(prompts) if prompts else None
    if ontology_file:
        ontology = Ontology.from_file(ontology_file)
    train = load_examples(train_source, labels=labels, min_score=min_score, images_dir=images_dir, ontology=ontology)
    val = None
    if val_source is not None:
        val = load_examples(val_source, labels="reviewed" if Path(val_source).is_dir() else labels,
                            images_dir=val_images_dir, ontology=train.ontology)
    base_model = model or _run_model(train_source) or settings.model

    config = TrainConfig(
        steps=steps, mode=mode, batch_size=batch_size, grad_accum=grad_accum, lr=lr, text_lr=text_lr,
        weight_decay=weight_decay, warmup_steps=warmup_steps, freeze_vision=freeze_vision, freeze_text=freeze_text,
        num_negatives=num_negatives, negative_vocabulary=_negatives(negatives),
        augment=AugmentConfig.none() if no_augment else AugmentConfig(), cache_views=cache_views,
        val_every=val_every, save_every=save_every, ensemble_alpha=ensemble_alpha, seed=seed, precision=precision,
        gradient_checkpointing=gradient_checkpointing, workers=workers, keep_state=keep_state,
    )
    click.echo(f"training on {train.description}: {train.num_boxes} boxes, classes {', '.join(train.ontology.names)}")
    if val is not None:
        click.echo(f"validating on {val.description}: {val.num_boxes} boxes")
    click.echo(f"starting from {base_model}")

    bar = tqdm(total=steps, disable=quiet, unit="step", desc="fine-tuning", dynamic_ncols=True)
    smoothed = {}

    def on_step(info):
        if bar.n == 0 and info["step"] > 1:
            bar.n = info["step"] - 1  # resumed
        smoothed["loss"] = 0.9 * smoothed.get("loss", info["loss"]) + 0.1 * info["loss"]
        smoothed["val_map"] = info.get("val_map", smoothed.get("val_map"))  # the last validation
        postfix = {"loss": f"{smoothed['loss']:.3f}", "lr": f"{info['lr']:.1e}"}
        if smoothed["val_map"] is not None:
            postfix["val mAP"] = f"{smoothed['val_map']:.3f}"
        bar.set_postfix(postfix, refresh=False)
        bar.update(1)

    try:
        result = run_finetune(train, out_dir, base_model=base_model, config=config, val=val, device=settings.device,
                              on_step=on_step, on_message=click.echo if quiet else bar.write)
    except KeyboardInterrupt:
        bar.close()
        click.echo(f"\ninterrupted: progress is saved in {out_dir}; run the same command again to resume", err=True)
        sys.exit(130)
    bar.close()

    if result.first_loss is not None:
        click.echo(f"train loss: {result.first_loss:.4f} (first steps) -> {result.last_loss:.4f} (last steps)")
    if result.val_before is not None:
        line = f"validation mAP: {result.val_before['map']:.4f} before"
        if result.val_best is not None:
            line += f", best {result.val_best['map']:.4f} at step {result.best_step}"
        if result.val_final is not None and result.val_final != result.val_best:
            line += f", output {result.val_final['map']:.4f}"
        click.echo(line)
    click.echo(f"weights: {result.weights}")
    click.echo(f"wrote {result.out_dir} (use it with --model {result.out_dir}); log: {result.log_path}")


def _run_model(source: str) -> str | None:
    """The model a run folder was labelled with (the natural starting point for fine-tuning)."""
    from autolabel.store import DB_NAME, open_store

    if not (Path(source).is_dir() and (Path(source) / DB_NAME).exists()):
        return None
    with open_store(source, create=False) as store:
        return (store.config or {}).get("model")
