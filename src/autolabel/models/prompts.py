"""Encoded prompts, kept per prompt list: a batch loop and a UI re-query ask for the same list again
and again, and the text tower is not free."""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Callable

log = logging.getLogger(__name__)


class PromptCache:
    """A small LRU of ``encode(queries)`` results, keyed by the prompt tuple."""

    def __init__(self, encode: Callable[[tuple[str, ...]], object], size: int = 32):
        self._encode = encode
        self._size = size
        self._entries: OrderedDict[tuple[str, ...], object] = OrderedDict()

    def __call__(self, queries) -> object:
        key = tuple(queries)
        cached = self._entries.get(key)
        if cached is not None:
            self._entries.move_to_end(key)
            return cached
        encoded = self._entries[key] = self._encode(key)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return encoded


class PaddedTokenizer:
    """Tokens of prompts padded (and cut) to the ``max_tokens`` a text tower reads (OWL families,
    SAM 3), warning once per prompt that the cut drops (the rest would be silently ignored)."""

    def __init__(self, tokenizer, max_tokens: int):
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self._warned: set[str] = set()

    def __call__(self, queries: tuple[str, ...], device):
        lengths = self.tokenizer(list(queries), truncation=False)["input_ids"]
        for query, ids in zip(queries, lengths):
            if len(ids) > self.max_tokens and query not in self._warned:
                self._warned.add(query)
                log.warning("prompt %r is %d tokens; the model reads only the first %d, the rest is ignored",
                            query, len(ids), self.max_tokens)
        return self.tokenizer(list(queries), padding="max_length", truncation=True, max_length=self.max_tokens,
                              return_tensors="pt").to(device)
