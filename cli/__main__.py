from dtstore.cli.main import entry

raise SystemExit(entry())
