"""The Gradio web UI: Test, Batch, Review and Export tabs over the core engine.

``app`` is the only module that imports Gradio; ``session``, ``batch``, ``review``, ``exporting``,
``draw``, ``runs`` and ``security`` are plain Python, unit-tested without a server. Start it with
``autolabel ui`` (or ``autolabel.ui.app.launch``).
"""
