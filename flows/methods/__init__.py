"""One module per method: its registration (``flows.registry.Method``), nothing else.

``flows.registry.load_methods`` imports every module here; a new method adds its own.
"""
