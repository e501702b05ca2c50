"""The Gradio web UI (``autolabel ui``): Test, Batch, Review and Export tabs over the core engine.
``app``, ``events`` and the ``tab_*`` modules use Gradio; the rest is plain Python, tested without a
server."""
