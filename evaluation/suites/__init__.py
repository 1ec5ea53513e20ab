"""Suite modules; each registers itself with `evaluation.registry.register_suite` on import (auto-discovered)."""
