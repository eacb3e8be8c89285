"""Lloyd: clustering, density estimation and anomaly scoring over HTTP."""

__version__ = "0.1.0"
