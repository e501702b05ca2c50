"""The report: a self-contained HTML page (inline PNG figures), metrics.json and thresholds.yaml."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser

from autolabel.evaluation import evaluate_run, write_report
from autolabel.ontology import Ontology


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources, self.cells = [], 0

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])
        if tag == "td":
            self.cells += 1


def test_report_is_self_contained_and_deterministic(make_eval_run, gt_coco, gt_data, tmp_path):
    store = make_eval_run("shifted", gt_data.predictions(shift=9))
    result = evaluate_run(store, gt_coco, target_precision=0.9)
    written = write_report(result, tmp_path / "eval", store.ontology, "precision")
    assert set(written) == {"report", "metrics", "thresholds"}
    page = written["report"].read_text()
    parser = _Images()
    parser.feed(page)
    assert len(parser.sources) == 3  # one figure (PR curve + histogram) per evaluated class
    for src in parser.sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert parser.cells == 4 * len(result.table_rows()[0])  # 3 classes + "all"
    assert not re.search(r"(src|href)=\"(http|//)", page), "nothing is fetched from the network"
    metrics = json.loads(written["metrics"].read_text())
    assert metrics["ap50"] == 1.0 and metrics["ap75"] == 0.0 and metrics["gt_only_classes"] == ["bike"]
    calibrated = Ontology.from_file(written["thresholds"])
    assert calibrated.names == store.ontology.names
    assert all(c.threshold is not None for c in calibrated.classes)
    again = write_report(result, tmp_path / "eval2", store.ontology, "precision")
    assert again["report"].read_bytes() == written["report"].read_bytes()


def test_table_rows_and_text_table(make_eval_run, gt_coco, gt_data):
    result = evaluate_run(make_eval_run("no-dogs", gt_data.predictions(drop={"dog"})), gt_coco)
    rows = result.table_rows()
    assert [r["class"] for r in rows] == ["car", "person", "dog", "all"]
    assert rows[2]["AP"] == 0.0 and rows[2]["P"] is None and rows[2]["F1 thr"] is None
    assert rows[-1]["gt"] == 9 and rows[-1]["pred"] == 7
    text = result.format_table()
    assert text.splitlines()[0].split()[:4] == ["class", "gt", "pred", "AP"]
    assert "P thr" not in text  # no target precision requested
