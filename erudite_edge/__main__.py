"""`python -m erudite_edge ...` (and `torchrun -m erudite_edge train ...` for multi-GPU training)."""

from erudite_edge.cli.app import run_as_program

run_as_program()
