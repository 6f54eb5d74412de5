"""Static HTML reports of runs and benchmark results (`sidrec report ... --html OUT`)."""

from sidrec.reporting.collect import ReportError, read_results, read_run
from sidrec.reporting.site import build_site

__all__ = ["ReportError", "build_site", "read_results", "read_run"]
