"""Allow `python -m p2pmoments`."""

from p2pmoments.cli import main

raise SystemExit(main())
