"""The interfaces: the ``maskage`` command, the HTTP service and the demo."""
