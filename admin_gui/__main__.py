"""`python -m admin_gui` starts the console, like `sivr admin`."""

from admin_gui.main import main

raise SystemExit(main())
