"""Connect to Ray, or start a private local cluster, for one labelling run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from autolabel.errors import ConfigError

INSTALL_HINT = "pip install 'autolabel[ray]'"

# Passed to every worker so a cluster started elsewhere follows the driver's offline choice.
WORKER_ENV_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def import_ray():
    """Ray (with Ray Data), or a ``ConfigError`` saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"--engine ray needs Ray Data, which is not installed: {INSTALL_HINT}") from exc
    return ray


def runtime_env() -> dict:
    env_vars = {name: os.environ[name] for name in WORKER_ENV_VARS if name in os.environ}
    return {"env_vars": env_vars} if env_vars else {}


@contextmanager
def ray_cluster(address: str = "local", num_cpus: int | None = None) -> Iterator[None]:
    """Ray for the duration of a run.

    ``address``: ``local`` starts a private cluster on this machine (dashboard off, bound to
    127.0.0.1, shut down on exit; ``num_cpus`` caps it); ``auto`` or ``ray://host:port`` joins an
    existing one. When Ray is already initialised in this process (a notebook, a test fixture), that
    connection is used as is and left open.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield
        return
    if address == "local":
        ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", num_cpus=num_cpus,
                 runtime_env=runtime_env(), log_to_driver=False)
    else:
        if not (address == "auto" or address.startswith("ray://") or ":" in address):
            raise ConfigError(f"--ray-address must be local, auto, ray://host:port or host:port, got {address!r}")
        ray.init(address=address, runtime_env=runtime_env(), log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
