"""The run report: a bounded sample of the run's records and a self-contained ``report.html``."""
