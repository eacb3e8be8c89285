"""How dbscan_*_478de48.joblib and dbscan_478de48.json were written: two DBSCAN models fitted
by Lloyd at commit 478de48 (DBSCANKNN before the inductive clusterers shared one class), and
their answers on 50 rows. Run it against that commit's tree, e.g.

    git archive 478de48 app | tar -x -C /tmp/lloyd_478de48
    cd /tmp/lloyd_478de48 && PYTHONPATH=. /work/main/.venv/bin/python \\
        /work/main/tests/ml/data/make_dbscan_478de48.py /work/main/tests/ml/data
"""

import json
import sys

import joblib
import numpy as np
import sklearn
from sklearn.datasets import make_moons

import app.ml.dbscan_knn as written_by
from app.ml.catalog import ALGORITHMS
from app.ml.fitting import fit_model

with open(written_by.__file__) as source:
    assert "InductiveClusterer" not in source.read(), written_by.__file__
X, _ = make_moons(n_samples=200, noise=0.03, random_state=0)
rng = np.random.default_rng(5)
rows = np.vstack([X[:20] + 0.05, rng.uniform([-1.5, -1.0], [2.5, 1.5], (30, 2))])
out = {
    "scikit-learn": sklearn.__version__,
    "numpy": np.__version__,
    "rows": rows.tolist(),
    "models": {},
}
MODELS = {"all_core": {"eps": 0.2, "min_samples": 5}, "with_noise": {"eps": 0.1, "min_samples": 6}}
for name, params in MODELS.items():
    result = fit_model(
        algorithm=ALGORITHMS["dbscan"],
        params=params,
        preprocessing=[],
        X=X,
        feature_names=None,
        contamination=0.02,
    )
    model = result.model
    joblib.dump(model, f"{sys.argv[1]}/dbscan_{name}_478de48.joblib")
    proba, classes = model.predict_proba(rows)
    out["models"][name] = {
        "params": params,
        "noise_ratio": result.metrics["noise_ratio"],
        "predict": model.predict(rows).tolist(),
        "predict_proba": proba.tolist(),
        "classes": classes.tolist(),
        "anomaly_scores": model.anomaly_scores(rows).tolist(),
        "threshold": model.anomaly.threshold,
        "parameters": model.parameters(),
    }
with open(f"{sys.argv[1]}/dbscan_478de48.json", "w") as target:
    json.dump(out, target, indent=1)
