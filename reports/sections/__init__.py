"""Report sections, one module each; every public module here is imported by :func:`reports.registry.load_sections`."""
