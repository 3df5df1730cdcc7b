"""``python -m daemon.cli``: the same entry as the ``democratic-ai`` command."""

import sys

from daemon.cli.main import main

sys.exit(main())
