"""The plain transformers recipe of the SAM2-style segmenters (SAM2, EdgeTAM, SAM 3 tracker), shared
by their tests: processor -> model -> ``post_process_masks``, boxes and optional clicks."""

from __future__ import annotations

import numpy as np
import torch


def recipe_masks(model_class, processor_class, path, image, boxes: np.ndarray, clicks=None) -> np.ndarray:
    """``(N, H, W)`` bool masks of ``boxes`` (``xyxy`` pixels of ``image``), with ``clicks`` (per box
    a list of ``(x, y, label)``) as ``input_points`` + ``input_labels`` when given."""
    processor = processor_class.from_pretrained(path)
    model = model_class.from_pretrained(path).eval()
    prompts = {"input_boxes": [boxes.tolist()]}
    if clicks is not None:
        prompts["input_points"] = [[[[x, y] for x, y, _ in box] for box in clicks]]
        prompts["input_labels"] = [[[label for _, _, label in box] for box in clicks]]
    inputs = processor(images=image, return_tensors="pt", **prompts)
    with torch.inference_mode():
        outputs = model(**inputs, multimask_output=False)
    return processor.post_process_masks(outputs.pred_masks, inputs["original_sizes"])[0][:, 0].numpy()
