"""``python -m grmp_edge.cli``: the same as the ``grmp-edge`` console script."""
import sys

from grmp_edge.cli.root import main

sys.exit(main())
