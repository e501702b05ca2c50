"""Domain errors. Front ends map these to one readable line (CLI) or a message (UI)."""


class AutolabelError(Exception):
    """Base class for errors a user can fix (bad input, bad configuration)."""


class ConfigError(AutolabelError):
    """Invalid settings, ontology or command-line options."""


class ImageLoadError(AutolabelError):
    """An image file could not be read; the run records it and goes on."""


class StoreError(AutolabelError):
    """The label store refuses an operation (e.g. a run folder made with another configuration)."""


class ModelLoadError(AutolabelError):
    """A checkpoint could not be loaded (missing, not safetensors, wrong architecture)."""
