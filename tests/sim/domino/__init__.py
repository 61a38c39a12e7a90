"""A simulated HCL Domino server and backup task (``python -m tests.sim.domino --help``)."""
