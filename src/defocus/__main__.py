"""``python -m defocus``: the command line (also ``torchrun -m defocus train ...``)."""
from .cli import main

main()
