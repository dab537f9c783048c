"""``python -m cluster``: the operator commands (cluster/cli.py)."""

import sys

from cluster.cli import main

sys.exit(main())
