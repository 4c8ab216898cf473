"""The model of a server, loaded once, and the predictors that run it with each request's options."""
from __future__ import annotations

import threading

from ..inference import Predictor
from .settings import ServeSettings


def build_predictor(settings: ServeSettings) -> Predictor:
    """The predictor a server with ``settings`` runs by default (loads the model)."""
    s = settings
    return Predictor(model=s.model, device=s.device, size=s.size, keep_aspect=s.keep_aspect, upscale=s.upscale,
                     threshold=s.threshold, upsample=s.upsample, flip_tta=s.flip_tta, refine=s.refine,
                     max_pixels=s.max_pixels,
                     batch_size=s.max_batch_files, workers=1)


class ServerPredictors:
    """One loaded model; a request's (size, keep_aspect, upscale, refine) gets a predictor that shares it
    (:meth:`Predictor.with_options`: only the pre- and post-processing differ, so nothing is loaded again).

    The default predictor (the settings' options) is built by :meth:`load_default` or given.
    """

    def __init__(self, settings: ServeSettings, default: Predictor | None = None):
        self.settings = settings
        self._lock = threading.Lock()
        self.default: Predictor | None = default

    def load_default(self) -> Predictor:
        """Build the predictor with the settings' options (loads the model; once, also when called from several
        threads at the same time)."""
        with self._lock:
            if self.default is None:
                self.default = build_predictor(self.settings)
            return self.default

    def get(self, size: int, keep_aspect: bool, upscale: bool = True, refine: bool = False) -> Predictor:
        """The predictor for these options, on the loaded model (loading it first if it is not yet)."""
        default = self.default or self.load_default()
        size, keep_aspect, upscale, refine = int(size), bool(keep_aspect), bool(upscale), bool(refine)
        o = default.options
        if (o.size, o.keep_aspect, o.upscale, o.refine) == (size, keep_aspect, upscale, refine):
            return default
        return default.with_options(size=size, keep_aspect=keep_aspect, upscale=upscale, refine=refine)
