"""End-to-end tests start real server processes: every one is marked ``slow`` (see
tests/conftest.py), so that ``scripts/test -m 'not slow'`` runs the fast part alone."""
