"""``python -m leopart`` — see :mod:`leopart.cli`."""

from leopart.cli import main

raise SystemExit(main())
