"""The transparency report: where the data lives, policies, replicas, drills, risk, audit head."""

from daulat.report.data import ReportData, collect
from daulat.report.html import render

__all__ = ["ReportData", "collect", "render"]
