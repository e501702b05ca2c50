"""Video labelling with tracks: decode (PyAV or frame folders), track (detector on keyframes + a mask
propagator between them), store (a SQLite file per video run) and exports (MOT, CVAT video, COCO
video, YOLO per frame)."""
