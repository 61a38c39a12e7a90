"""Sources: what a snapshot is made of.  ``base.py`` is the interface connectors implement."""
