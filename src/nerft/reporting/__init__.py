"""Reports a person looks at: evaluation pages with per-label F1 charts, run pages with loss curves,
and side-by-side comparisons of runs. Markdown and self-contained HTML, charts as PNG (matplotlib,
imported only when drawing)."""

from nerft.reporting.eval_report import load_eval_report, write_eval_report
from nerft.reporting.run_report import write_run_reports

__all__ = ["load_eval_report", "write_eval_report", "write_run_reports"]
