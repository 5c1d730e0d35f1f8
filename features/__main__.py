"""``python -m features``: see features.cli."""

import sys

from features.cli import main

sys.exit(main())
