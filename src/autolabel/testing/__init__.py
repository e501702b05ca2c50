"""Random-weight checkpoints built from configs: tiny ones for tests and smoke runs, full-size ones
for honest timings (compute does not depend on weight values). They are saved with
``save_pretrained`` and loaded through the same path as a hub id."""
