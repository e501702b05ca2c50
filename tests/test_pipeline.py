"""Post-processing with controlled raw outputs whose right answer is known."""

import numpy as np
import pytest

from autolabel.errors import ConfigError, ModelLoadError
from autolabel.ontology import Ontology
from autolabel.geometry import Size
from autolabel.models.owlv2 import postprocess_logits as postprocess
from autolabel.pipeline import DetectConfig, Labeler


def _logit(p):
    return float(np.log(p / (1 - p)))


def _raw(boxes_cxcywh, scores_per_query):
    return np.array(scores_per_query, dtype=np.float32), np.array(boxes_cxcywh, dtype=np.float32)


ONT = Ontology.from_classes([{"name": "car", "prompts": ["car", "van"], "threshold": 0.5}, {"name": "person"}])


def test_boxes_scale_by_longer_side_and_padding_boxes_are_dropped():
    # 200 x 100 image: padded to 200 x 200, so the lower half of the square is padding.
    logits, boxes = _raw(
        [[0.25, 0.25, 0.1, 0.1],  # inside the image
         [0.5, 0.75, 0.2, 0.2],  # wholly in the padding: dropped
         [0.5, 0.5, 0.2, 0.2]],  # straddles the image edge: clipped to y1 = 100
        [[_logit(0.9), -9, -9]] * 3,
    )
    dets = postprocess(logits, boxes, Size(200, 100), ONT, DetectConfig(threshold=0.0, nms_iou=None))
    np.testing.assert_allclose(dets.xyxy, [[40, 40, 60, 60], [80, 80, 120, 100]], atol=1e-4)


def test_per_class_threshold_and_best_query_decides_class():
    logits, boxes = _raw(
        [[0.2, 0.2, 0.1, 0.1], [0.6, 0.6, 0.1, 0.1], [0.8, 0.2, 0.1, 0.1]],
        [[_logit(0.4), -9, -9],  # car at 0.4 < its own threshold 0.5: dropped
         [-9, _logit(0.7), -9],  # matched by "van" -> class car, prompt 1
         [-9, -9, _logit(0.2)]],  # person at 0.2 > global 0.1: kept
    )
    dets = postprocess(logits, boxes, Size(100, 100), ONT, DetectConfig(threshold=0.1, nms_iou=None))
    assert dets.class_ids.tolist() == [0, 1]
    assert dets.prompt_ids.tolist() == [1, 2]
    np.testing.assert_allclose(dets.scores, [0.7, 0.2], atol=1e-6)


def test_nms_per_class_and_agnostic():
    box = [0.5, 0.5, 0.2, 0.2]
    logits, boxes = _raw([box, box, box], [[_logit(0.9), -9, -9], [_logit(0.8), -9, -9], [-9, -9, _logit(0.85)]])
    per_class = postprocess(logits, boxes, Size(100, 100), ONT, DetectConfig(threshold=0.1, nms_iou=0.5))
    assert per_class.class_ids.tolist() == [0, 1]  # the second car is suppressed, the person is not
    agnostic = postprocess(logits, boxes, Size(100, 100), ONT, DetectConfig(threshold=0.1, nms_iou=0.5, agnostic_nms_iou=0.5))
    assert agnostic.class_ids.tolist() == [0]


def test_area_filters():
    logits, boxes = _raw([[0.5, 0.5, 0.9, 0.9], [0.5, 0.5, 0.05, 0.05], [0.2, 0.2, 0.3, 0.3]], [[_logit(0.9), -9, -9]] * 3)
    dets = postprocess(logits, boxes, Size(100, 100), ONT, DetectConfig(threshold=0.1, nms_iou=None, min_area_frac=0.01, max_area_frac=0.5))
    np.testing.assert_allclose(dets.xyxy, [[5, 5, 35, 35]], atol=1e-4)


@pytest.mark.parametrize("kwargs", [{"threshold": 1.5}, {"nms_iou": 0.0}, {"min_area_frac": 0.6, "max_area_frac": 0.5}])
def test_bad_detect_config(kwargs):
    with pytest.raises(ConfigError):
        DetectConfig(**kwargs)


def test_labeler_checks_mode(tiny_owlv2):
    with pytest.raises(ConfigError, match="needs a segmenter"):
        Labeler(ONT, model=str(tiny_owlv2), mode="segment")  # OWLv2 makes no masks
    with pytest.raises(ModelLoadError, match="'x'"):
        Labeler(ONT, model="x", mode="segment")
    with pytest.raises(ConfigError, match="mode"):
        Labeler(ONT, model="x", mode="classify")


def test_max_detections_keeps_the_best_scores():
    logits, boxes = _raw([[0.2, 0.2, 0.1, 0.1], [0.6, 0.6, 0.1, 0.1], [0.8, 0.2, 0.1, 0.1]],
                         [[_logit(0.3), -9, -9], [_logit(0.9), -9, -9], [-9, -9, _logit(0.6)]])
    dets = postprocess(logits, boxes, Size(100, 100), ONT, DetectConfig(threshold=0.0, nms_iou=None, max_detections=2))
    np.testing.assert_allclose(dets.scores, [0.9, 0.6], atol=1e-6)
    with pytest.raises(ConfigError):
        DetectConfig(max_detections=0)


def test_config_dict_without_max_detections_matches_older_runs():
    """Runs stored before max_detections existed have no such key: the default must not differ."""
    assert "max_detections" not in DetectConfig().to_dict()
    assert DetectConfig(max_detections=5).to_dict()["max_detections"] == 5


def test_run_config_records_the_precision_asked_for_and_leaves_out_auto():
    """Runs stored before the option existed have no precision key: they resume with the default."""
    assert "precision" not in Labeler(ONT, model="x").run_config()
    assert Labeler(ONT, model="x", precision="int8").run_config()["precision"] == "int8"
    with pytest.raises(ConfigError, match="unknown precision 'half'"):
        Labeler(ONT, model="x", precision="half")


def test_store_refuses_to_resume_with_another_precision(tmp_path):
    from autolabel.errors import StoreError
    from autolabel.store import open_store

    with open_store(tmp_path / "old") as store:
        old = Labeler(ONT, model="x").run_config()  # what a run made before the option recorded
        store.bind_config(old)
        store.bind_config(Labeler(ONT, model="x", precision="auto").run_config())
    with open_store(tmp_path / "run") as store:
        store.bind_config(Labeler(ONT, model="x", precision="fp32").run_config())
        with pytest.raises(StoreError, match=r"precision: \"fp32\" -> \"bf16\""):
            store.bind_config(Labeler(ONT, model="x", precision="bf16").run_config())


def test_very_negative_logits_give_zero_scores_without_warnings():
    import warnings

    logits = np.array([[-1e4, -1e5, -np.inf]], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dets = postprocess(logits, np.array([[0.5, 0.5, 0.1, 0.1]], dtype=np.float32), Size(10, 10), ONT,
                           DetectConfig(threshold=0.0, nms_iou=None))
    assert len(dets) == 0  # score 0 is not above a threshold of 0


def test_stage_times_sum_over_threads():
    import threading
    import time

    from autolabel.pipeline import StageTimes

    times, synced = StageTimes(sync=lambda: synced.append(1)), []

    def work():
        with times.stage("decode"):
            time.sleep(0.01)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert times.as_dict()["decode"] >= 0.03 and len(synced) == 3


def test_compile_on_the_cpu_without_a_cxx_compiler_is_one_config_error(tiny_owlv2):
    import torch._inductor.config

    labeler = Labeler(Ontology.from_prompts(["cat"]), model=str(tiny_owlv2), device="cpu", compile=True)
    with torch._inductor.config.patch({"cpp.cxx": (None, "no-such-cxx")}):
        with pytest.raises(ConfigError, match=r"needs a C\+\+ compiler"):
            labeler.model_device
