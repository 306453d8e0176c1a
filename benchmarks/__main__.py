"""``python -m benchmarks`` (from a checkout) or ``python -m convkit.benchmarks`` (installed)."""

import sys

from .cli import main

sys.exit(main(prog=f"python -m {__package__}"))
