"""Scale ``autolabel label`` out on a Ray cluster (``--engine ray``). Ray is an optional extra
(``pip install 'autolabel[ray]'``); importing this package does not import Ray.

- ``sources``: list inputs (local folders, or ``s3://``, ``gs://``, ``abfs://`` URIs through pyarrow)
  and fetch remote files in the workers.
- ``cluster``: connect to a cluster, or start a local one bound to 127.0.0.1 (shut down at the end).
- ``workers``: what runs remotely: decode tasks (``Labeler.prepare``) and the model actors
  (``Labeler.launch`` + ``finish``); only label records come back.
- ``exemplars``: exemplar images read once by the driver and shipped to the actors as bytes.
- ``engine``: the driver: resume, the Ray Data pipeline, the one store writer.
"""

from autolabel.distributed.engine import RayOptions, RaySummary, label_on_ray

__all__ = ["RayOptions", "RaySummary", "label_on_ray"]
