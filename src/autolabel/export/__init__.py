"""Exporters: the store's labels written in the formats trainers load.

Everything here works in original oriented pixels until the last step, where ``package`` maps
coordinates to the exported image size. Exports are deterministic (stable ids and order, no
timestamps) and atomic (temp file + rename, or one ZIP renamed into place).
"""
