"""The translation quality checks live in ``fineflow.tasks.text.qc`` (shared with other
text-rewriting stages); this name stays for the translate stage's modules."""

from fineflow.tasks.text.qc import CHECKS, calibration, fails, measure

CALIBRATION = calibration.digest()  # in the translate step's version: its coverage uses the file

__all__ = ["CALIBRATION", "CHECKS", "fails", "measure"]
