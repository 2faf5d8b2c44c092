from voucherd.cli import main

raise SystemExit(main())
