"""``compare_models`` ranks models of known quality correctly: on synthetic shapes, a tiny OWLv2
fine-tuned on squares only, one fine-tuned on circles only, and the untrained base."""

from __future__ import annotations

import json

import pytest
import yaml

from autolabel.compare import compare_models, write_comparison
from autolabel.compare.run import SPEED_FILE, run_folder_name
from autolabel.errors import ConfigError


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models are all overhead: one intra-op thread is faster on a busy 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shapes_and_models(tmp_path_factory):
    """Ground truth, and three checkpoints: (base, squares-only, circles-only)."""
    from autolabel.finetune import TrainConfig, finetune, load_examples
    from autolabel.finetune.synthetic import build_calibrated_owlv2, make_shapes_dataset

    root = tmp_path_factory.mktemp("compare")
    gt = make_shapes_dataset(root / "shapes", n_images=6)
    base = build_calibrated_owlv2(root / "base")
    doc = json.loads(gt.read_text())
    config = TrainConfig(steps=200, mode="heads", lr=3e-2, batch_size=4, val_every=0, save_every=0, workers=1)
    trained = []
    for name, category in (("squares", 1), ("circles", 2)):
        only = dict(doc, annotations=[a for a in doc["annotations"] if a["category_id"] == category])
        (gt.parent / f"{name}.json").write_text(json.dumps(only))
        train = load_examples(gt.parent / f"{name}.json", images_dir=gt.parent / "images")
        finetune(train, root / name, base_model=str(base), config=config, device="cpu")
        trained.append(str(root / name))
    return gt, (str(base), *trained)


def test_compare_names_the_better_model_overall_and_per_class(shapes_and_models, tmp_path):
    gt, (base, squares, circles) = shapes_and_models
    out = tmp_path / "cmp"
    comparison = compare_models(gt, [base, squares, circles], out, device="cpu", batch_size=3, workers=1)

    by_model = {m.model: m for m in comparison.models}
    assert [m.model for m in comparison.models] == [base, squares, circles]
    assert comparison.best() is not by_model[base]
    assert by_model[base].result.map < min(by_model[squares].result.map, by_model[circles].result.map)
    best_per_class = {name: m.model for name, m in comparison.best_per_class().items()}
    assert best_per_class == {"square": squares, "circle": circles}
    for m in comparison.models:
        assert m.images_per_second and m.images_per_second > 0
        assert m.run_dir == out / "runs" / run_folder_name(m.model) and (m.run_dir / SPEED_FILE).exists()

    written = write_comparison(comparison, out)
    markdown = written["markdown"].read_text()
    assert f"Best overall: {comparison.best().model}" in markdown
    assert markdown.count("![") == 2 and (out / "pr_curves" / "01.png").stat().st_size > 1000
    html = written["html"].read_text()
    assert html.count("data:image/png;base64,") == 2 and "Per class" in html
    summary = json.loads(written["json"].read_text())
    assert summary["best"] == comparison.best().model and summary["best_per_class"] == best_per_class
    # The winner's ontology carries its calibrated thresholds and loads as an ontology.
    ontology = yaml.safe_load(written["ontology"].read_text())
    thresholds = comparison.best().result.thresholds()
    assert thresholds and {c["name"]: c.get("threshold") for c in ontology["classes"]} == {
        name: thresholds.get(name) for name in ("square", "circle")}


def test_a_rerun_resumes_without_relabelling(shapes_and_models, tmp_path):
    gt, (base, squares, _) = shapes_and_models
    first = compare_models(gt, [base, squares], tmp_path, device="cpu", workers=1)
    totals = []
    again = compare_models(gt, [base, squares], tmp_path, device="cpu", workers=1, on_total=totals.append)
    assert totals == [0, 0]
    assert [m.result.map for m in again.models] == [m.result.map for m in first.models]
    assert [m.images_per_second for m in again.models] == [m.images_per_second for m in first.models]


def test_bad_model_lists_are_refused(shapes_and_models, tmp_path):
    gt, (base, _, _) = shapes_and_models
    with pytest.raises(ConfigError, match="twice"):
        compare_models(gt, [base, base], tmp_path)
    with pytest.raises(ConfigError, match="at least one model"):
        compare_models(gt, [], tmp_path)
