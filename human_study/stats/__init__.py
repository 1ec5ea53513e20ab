"""Statistics for pairwise preference votes (SciPy / statsmodels / krippendorff; no hand-rolled distributions).

- :mod:`.proportions` – win/tie/loss shares with Goodman or Wilson CIs, exact sign test;
- :mod:`.bootstrap` – prompt-clustered bootstrap;
- :mod:`.bradley_terry` – Bradley–Terry with ties (Davidson / tie = half) and bootstrap CIs;
- :mod:`.agreement` – Krippendorff's alpha, Fleiss' kappa, percent agreement, repeat consistency;
- :mod:`.quality` – gold accuracy and the exclusion rule;
- :mod:`.tables` – everything as the report tables.
"""

from .proportions import win_tie_loss
from .tables import AnalysisConfig, StudyResults, analyse

__all__ = ["AnalysisConfig", "StudyResults", "analyse", "win_tie_loss"]
