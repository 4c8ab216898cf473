"""What a ``defocus serve`` process is allowed to do: the model it runs and the limits it enforces."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..defaults import SERVE_MAX_PIXELS


#: Header that carries the API key when the server has one.
API_KEY_HEADER = "X-API-Key"
#: Network input sizes a request may ask for (``size``); each distinct size keeps one predictor in memory.
MIN_SIZE, MAX_SIZE = 32, 1536
#: Headroom for multipart framing (boundaries, part headers) on top of the per-file byte limit.
MULTIPART_OVERHEAD = 64 * 1024


@dataclass(frozen=True)
class ServeSettings:
    """Settings of one server. The prediction defaults are those of ``defocus predict``.

    Args:
        model: what :class:`~defocus.inference.Predictor` loads (``"default"``: the bundled weights).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` ...
        size, keep_aspect, upscale, threshold, upsample: prediction defaults; ``size``, ``keep_aspect``,
            ``upscale`` and ``threshold`` can be overridden per request. ``size=None`` and ``upscale=None``: the
            model's own (:class:`~defocus.inference.PredictOptions`).
        flip_tta: every request also runs its images mirrored and averages the two maps (not in the paper).
        refine: every map is refined along its photo's colour edges (:func:`defocus.matting.refine_map`; not in
            the paper).
        workers: inference threads; the network itself runs one batch at a time, the threads overlap decoding
            and encoding with it.
        queue_size: requests that may wait for a free worker; beyond ``workers + queue_size`` requests in
            flight the server answers 503 with ``Retry-After``.
        max_upload_bytes: largest accepted image file (a batch may carry ``max_batch_files`` of them).
        max_pixels: largest accepted image (width x height, checked from the header before decoding); lower
            than ``defocus predict``'s limit, since several uploads are decoded at once.
        max_batch_files: most images in one ``/v1/predict/batch`` request.
        request_timeout: seconds a request may wait for its result before a 504.
        api_key: when set, every ``/v1`` request must carry it in the ``X-API-Key`` header.
        threads: PyTorch CPU threads of each worker (``torch.set_num_threads`` in that thread); ``None``: the
            count of the thread that creates the application, when torch is already imported by then.
    """

    model: str = "default"
    device: str = "auto"
    size: Optional[int] = None
    keep_aspect: bool = False
    upscale: Optional[bool] = None
    threshold: float = 0.5
    upsample: str = "bilinear"
    flip_tta: bool = False
    refine: bool = False
    workers: int = 2
    queue_size: int = 8
    max_upload_bytes: int = 40 * 1024 * 1024
    max_pixels: int = SERVE_MAX_PIXELS
    max_batch_files: int = 16
    request_timeout: float = 60.0
    api_key: str | None = None
    threads: int | None = None

    def __post_init__(self):
        checks = [
            (self.workers >= 1, f"workers must be at least 1, got {self.workers}"),
            (self.queue_size >= 0, f"queue_size must be at least 0, got {self.queue_size}"),
            (self.max_upload_bytes >= 1, f"max_upload_bytes must be positive, got {self.max_upload_bytes}"),
            (self.max_pixels >= 1, f"max_pixels must be positive, got {self.max_pixels}"),
            (self.max_batch_files >= 1, f"max_batch_files must be at least 1, got {self.max_batch_files}"),
            (self.request_timeout > 0, f"request_timeout must be positive, got {self.request_timeout}"),
            (self.size is None or MIN_SIZE <= self.size <= MAX_SIZE,
             f"size must be in [{MIN_SIZE}, {MAX_SIZE}], got {self.size}"),
            (0.0 <= self.threshold <= 1.0, f"threshold must be in [0, 1], got {self.threshold}"),
            (self.api_key is None or len(self.api_key) > 0, "api_key must not be empty"),
            (self.api_key is None or (self.api_key.isascii() and self.api_key.isprintable()
                                      and self.api_key.strip() == self.api_key),
             "api_key must be printable ASCII without surrounding spaces (HTTP headers carry no other text "
             "reliably: a browser cannot send it)"),
            (self.threads is None or self.threads >= 1, f"threads must be at least 1, got {self.threads}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def capacity(self) -> int:
        """Requests that may be in flight (running or waiting) before new ones get 503."""
        return self.workers + self.queue_size
