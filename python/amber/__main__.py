"""python -m amber: the command line (amber/cli.py)."""
import sys

from .cli import main

sys.exit(main())
