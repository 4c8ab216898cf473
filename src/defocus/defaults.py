"""Numbers shared by the library and the command line (torch-free, so the CLI can show them as defaults)."""

#: The paper's test-time input side: images are squashed to PAPER_SIZE x PAPER_SIZE (docs/method.md, "Evaluation").
PAPER_SIZE = 320

#: Config key of a network's input default for photos smaller than its input size: ``False`` = it was trained
#: without enlarging them (``data.upscale: false``), so ``Predictor`` runs them at their own size unless told
#: otherwise. Absent = the paper's enlargement. Saved with the weights and exported to ONNX with them.
UPSCALE_KEY = "upscale"

#: Config key of a network's own input size (the square side, or the long side with ``keep_aspect``): the size it
#: was chosen to run at. Absent = the paper's PAPER_SIZE. Saved and exported with the weights like UPSCALE_KEY.
INPUT_SIZE_KEY = "input_size"

#: The config keys that say how to run a network rather than what it is: two networks that differ only in them
#: have the same architecture.
INPUT_DEFAULT_KEYS = (INPUT_SIZE_KEY, UPSCALE_KEY)


def input_size_of(config: dict) -> int:
    """A network's own input size from its config: the recorded INPUT_SIZE_KEY, else the paper's PAPER_SIZE."""
    return int(config.get(INPUT_SIZE_KEY, PAPER_SIZE))

#: ONNX opset of ``defocus export``.
DEFAULT_OPSET = 17

#: Largest difference of in-focus probabilities between ONNX Runtime and PyTorch that an export accepts.
EXPORT_TOLERANCE = 1e-4

#: The server's default pixel limit per image (``defocus serve --max-pixels``): 64 MP, a phone's full-resolution
#: photo; lower than ``defocus predict``'s, since several uploads are decoded at once.
SERVE_MAX_PIXELS = 64_000_000
