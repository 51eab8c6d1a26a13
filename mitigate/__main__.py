"""Allow ``python -m mitigate`` (and ``accelerate launch -m mitigate``)."""

import sys

from mitigate.cli import main

sys.exit(main())
