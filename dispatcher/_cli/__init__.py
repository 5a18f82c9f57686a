"""The pieces of the ``tenantflow`` command line (``dispatcher/cli.py`` wires them together)."""
