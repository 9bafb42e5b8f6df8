"""``python -m sapo_vl.cli`` and the ``sapo-vl`` console script: the commands live in ``sapo_vl.commands``."""

import sys

from sapo_vl.commands import main

if __name__ == "__main__":
    sys.exit(main())
