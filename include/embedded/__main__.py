"""``python -m include.embedded``: see ``include.embedded.cli``."""

from include.embedded.cli import main

raise SystemExit(main())
