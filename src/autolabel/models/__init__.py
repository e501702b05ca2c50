"""One module per model family. Heavy imports (torch, transformers) stay inside these modules."""
