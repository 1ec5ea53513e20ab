"""``python -m evaluation.efficiency RUN_DIR``: rebuild the table, targets and plots of a stored run."""
import sys

from .table import main

sys.exit(main())
