from onager.cli import main

raise SystemExit(main())
