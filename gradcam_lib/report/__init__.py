"""The report layer: what a chapter shows, built from result rows; nothing here computes a result.

* :mod:`~gradcam_lib.report.tables`: :class:`Table` (HTML for the book, text for nbval),
  :func:`side_by_side` (this run beside the published numbers);
* :mod:`~gradcam_lib.report.claims`: :class:`Claims`, the prose's statements checked on the run;
* :mod:`~gradcam_lib.report.viz`: figure helpers (overlays, boxes, grids);
* :mod:`~gradcam_lib.report.published`: the paper's and KTH's numbers, each with its source;
* one module per chapter for its figures and tables (``report.localization``, ...).
"""

from gradcam_lib.report.claims import Claim, Claims
from gradcam_lib.report.tables import MISSING, Table, side_by_side

__all__ = ["MISSING", "Claim", "Claims", "Table", "side_by_side"]
