"""The transparency report: where the data lives, policies, replicas, drills, risk, audit head."""

from daulat.report.data import ReportData, collect
from daulat.report.html import render
from daulat.report.write import WrittenReport, write_report

__all__ = ["ReportData", "WrittenReport", "collect", "render", "write_report"]
