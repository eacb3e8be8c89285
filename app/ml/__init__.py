"""Pure scikit-learn: the algorithm catalog, estimators, anomaly thresholds and fitting."""
