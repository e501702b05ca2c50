"""The Export tab: a run in a chosen format and size as a download, and (when the evaluation
package is installed) its scores against a ground-truth run."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr
import pandas as pd

from autolabel.errors import StoreError
from autolabel.ui.downloads import export_dir
from autolabel.ui.events import listen
from autolabel.export import FORMATS, MASK_FORMATS
from autolabel.ui.exporting import evaluate_against, evaluation_available, run_export

if TYPE_CHECKING:
    from autolabel.ui.app import AutolabelApp

SUMMARY_HEADERS = ["class", "annotations"]


class ExportTab:
    """The Export tab's components (built inside the current ``gr.Tab``) and handlers."""

    def __init__(self, app: AutolabelApp):
        self.app = app
        formats = list(FORMATS)  # COCO first
        with gr.Row():
            self.run = gr.Dropdown(label="Run", choices=app.runs(), elem_id="export-run")
            self.format = gr.Dropdown(label="Format", choices=formats, value=formats[0], elem_id="export-format")
            self.image_size = gr.Textbox(label="Image size", value="640", elem_id="export-image-size",
                                         info="N: longest side; WxH: exact; empty: original size")
            self.masks = gr.Radio(list(MASK_FORMATS), value="polygon", label="Masks (COCO)", elem_id="export-masks")
        self.export_button = gr.Button("Export", variant="primary", elem_id="export-button")
        self.download = gr.DownloadButton("Download", visible=False, elem_id="export-download")
        self.summary = gr.Markdown(elem_id="export-summary")
        self.table = gr.Dataframe(value=pd.DataFrame([], columns=SUMMARY_HEADERS), interactive=False,
                                  elem_id="export-table")
        with gr.Accordion("Evaluate against ground truth", open=False, visible=evaluation_available()):
            with gr.Row():
                self.gt_run = gr.Dropdown(label="Ground-truth run (its reviewed images)", choices=app.runs(),
                                          elem_id="eval-gt-run")
                self.evaluate_button = gr.Button("Evaluate the run above", elem_id="eval-button")
            self.eval_summary = gr.Markdown(elem_id="eval-summary")
            self.eval_table = gr.Dataframe(interactive=False, elem_id="eval-table")

    def wire(self) -> None:
        listen(self.export_button.click, self.export, [self.run, self.format, self.image_size, self.masks],
               [self.download, self.summary, self.table])
        listen(self.evaluate_button.click, self.evaluate, [self.run, self.gt_run], [self.eval_summary, self.eval_table])

    def export(self, run, fmt, image_size, masks) -> dict:
        cfg = self.app.config
        with self.app.open_run(run) as store:
            summary = run_export(store, fmt, export_dir(cfg.work_dir, run), image_size=image_size, masks=masks,
                                 zip_name=f"{run}_{fmt}.zip", max_pixels=cfg.max_image_pixels)
        text = (f"Exported **{run}** as {fmt}: {summary.images} images, {summary.annotations} annotations"
                f" (rejected labels excluded).")
        return {self.download: gr.update(value=str(summary.path), visible=True), self.summary: text,
                self.table: pd.DataFrame(sorted(summary.per_class.items()), columns=SUMMARY_HEADERS)}

    def evaluate(self, run, gt_run) -> dict:
        if not gt_run:
            raise StoreError("choose the run that holds the ground truth")
        if gt_run == run:
            raise StoreError("choose another run as ground truth (e.g. one made with `autolabel import`)")
        with self.app.open_run(run) as store, self.app.open_run(gt_run) as gt:
            headers, rows, text = evaluate_against(store, gt)
        return {self.eval_summary: text, self.eval_table: pd.DataFrame(rows, columns=headers)}

    def on_load(self) -> dict:
        # The ground-truth list keeps its choice: only its choices are refreshed.
        return {self.run: self.app.run_dropdown(), self.gt_run: gr.Dropdown(choices=self.app.runs())}
