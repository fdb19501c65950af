"""`python -m erudite_edge ...` (and `torchrun -m erudite_edge train ...` for multi-GPU training)."""

import sys

from .cli import main

sys.exit(main())
