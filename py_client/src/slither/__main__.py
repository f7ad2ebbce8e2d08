"""``python -m slither``: the operator's command line (see :mod:`slither.cli`)."""

import sys

from slither.cli import main

sys.exit(main())
