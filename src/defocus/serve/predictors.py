"""The loaded models of a server: one :class:`~defocus.inference.Predictor` per (size, keep_aspect, upscale), kept
few."""
from __future__ import annotations

import threading
from collections import OrderedDict

from ..inference import Predictor
from .settings import ServeSettings


class PredictorCache:
    """Predictors keyed by ``(size, keep_aspect, upscale)``; the least recently used one is dropped beyond
    ``max_predictors``.

    The first predictor (the settings' defaults) is built by :meth:`load_default` or given; others are built on
    first use, once each even when several requests ask at the same time.
    """

    def __init__(self, settings: ServeSettings, default: Predictor | None = None):
        self.settings = settings
        self._cache: OrderedDict[tuple[int, bool, bool], Predictor] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[tuple[int, bool, bool], threading.Lock] = {}
        self.default: Predictor | None = None
        if default is not None:
            self._set_default(default)

    def _set_default(self, predictor: Predictor) -> None:
        settings = predictor.settings()
        with self._lock:
            self.default = predictor
            self._cache[(int(settings["size"]), bool(settings["keep_aspect"]), bool(settings["upscale"]))] = predictor

    def _build(self, size: int, keep_aspect: bool, upscale: bool) -> Predictor:
        s = self.settings
        return Predictor(model=s.model, device=s.device, size=size, keep_aspect=keep_aspect, upscale=upscale,
                         threshold=s.threshold, upsample=s.upsample, max_pixels=s.max_pixels,
                         batch_size=s.max_batch_files, workers=1)

    def load_default(self) -> Predictor:
        """Build the predictor with the settings' size, keep_aspect and upscale (loads the model)."""
        predictor = self._build(self.settings.size, self.settings.keep_aspect, self.settings.upscale)
        self._set_default(predictor)
        return predictor

    def get(self, size: int, keep_aspect: bool, upscale: bool = True) -> Predictor:
        """The predictor for these options, built if needed (call from a worker thread: building takes seconds)."""
        key = (int(size), bool(keep_aspect), bool(upscale))
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            building = self._building.setdefault(key, threading.Lock())
        with building:
            with self._lock:
                if key in self._cache:
                    return self._cache[key]
            predictor = self._build(*key)
            with self._lock:
                self._cache[key] = predictor
                self._building.pop(key, None)
                while len(self._cache) > self.settings.max_predictors:
                    oldest = next(k for k in self._cache if self._cache[k] is not self.default)
                    del self._cache[oldest]
            return predictor
