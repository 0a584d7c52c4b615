"""``python -m jkbms_exporter`` entry point."""

import sys

from .cli import main

sys.exit(main())
