"""``python -m proxy``: the same as the ``strangler`` command."""

import sys

from proxy.cli import main

sys.exit(main())
