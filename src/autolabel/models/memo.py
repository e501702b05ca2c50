"""What a labeler computes with a loaded model and may need again, remembered with the model.

A UI builds a ``Labeler`` per request on the same loaded models, so a memo lives with the model
object (weakly keyed: it goes when the model goes), not with the labeler. Each subclass is one kind
of memo with its own table and size: the least recently used entries beyond ``KEPT`` are dropped.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable


class ModelMemo:
    KEPT = 16

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._memos = weakref.WeakKeyDictionary()  # model -> this kind's memo
        cls._memos_lock = threading.Lock()

    def __init__(self):
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def of(cls, model):
        """The model's memo of this kind; None for a model that takes no weak reference (or no hash)."""
        with cls._memos_lock:
            try:
                return cls._memos.setdefault(model, cls())
            except TypeError:
                return None

    def recall(self, keys: Iterable) -> dict:
        """``{key: value}`` of the ``keys`` remembered (each becomes the most recently used)."""
        with self._lock:
            found = {}
            for key in keys:
                if key in self._items:
                    self._items.move_to_end(key)
                    found[key] = self._items[key]
            return found

    def remember(self, items: dict) -> None:
        with self._lock:
            for key, value in items.items():
                self._items[key] = value
                self._items.move_to_end(key)
            while len(self._items) > self.KEPT:
                self._items.popitem(last=False)
