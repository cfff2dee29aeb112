"""Run folders, metrics and reports."""
