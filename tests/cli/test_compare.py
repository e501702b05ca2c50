"""``autolabel compare`` in-process: reports and the winner's ontology are written, the best model is
named, and a checkpoint of the wrong kind fails before anything is labelled."""

from __future__ import annotations

from click.testing import CliRunner

from autolabel.cli import main


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_compare_writes_reports_and_names_the_best(tmp_path, tiny_owlv2):
    from autolabel.finetune.synthetic import build_calibrated_owlv2, make_shapes_dataset

    gt = make_shapes_dataset(tmp_path / "shapes", n_images=3)
    other = build_calibrated_owlv2(tmp_path / "other", image_size=64)
    out = tmp_path / "cmp"
    result = _invoke("compare", gt, "--gt-images", gt.parent / "images", "--model", tiny_owlv2, "--model", other,
                     "--out", out, "--device", "cpu", "--quiet", "--prompt", "square=square,red square")
    assert result.exit_code == 0, result.output
    assert "best overall: " in result.output and "best per class:" in result.output
    for name in ("report.md", "report.html", "comparison.json", "best_ontology.yaml"):
        assert (out / name).exists(), name
    assert len(list((out / "runs").iterdir())) == 2
    assert "red square" in (out / "best_ontology.yaml").read_text()


def test_a_segmenter_given_as_model_fails_first(tmp_path, tiny_owlv2, tiny_sam2):
    from autolabel.finetune.synthetic import make_shapes_dataset

    gt = make_shapes_dataset(tmp_path / "shapes", n_images=1)
    out = tmp_path / "cmp"
    result = _invoke("compare", gt, "--model", tiny_owlv2, "--model", tiny_sam2, "--out", out, "--device", "cpu")
    assert result.exit_code == 1
    assert "--sam-model" in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()
