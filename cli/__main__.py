from dtstore.cli.main import main

raise SystemExit(main())
