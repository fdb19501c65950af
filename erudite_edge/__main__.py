"""`python -m erudite_edge ...` (and `torchrun -m erudite_edge train ...` for multi-GPU training)."""

from .cli import run_as_program

run_as_program()
