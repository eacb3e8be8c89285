"""What the forkserver loads once for every worker it forks: the worker's code, and the caches
scikit-learn fills on its first call (the tasks' own modules are the executor's ``preload``)."""

from __future__ import annotations

import numpy as np
from sklearn.preprocessing import StandardScaler

from app.jobs import worker

# Imported here, in the forkserver, so that no worker imports them again.
__all__ = ["worker"]

# scikit-learn's input validation asks narwhals whether the rows are a dataframe, and narwhals
# looks for plugins among the entry points of every installed distribution the first time: a
# scan of their metadata files that cost each worker 25-30 ms of its fit (measured in a worker
# fitting 200,000 x 16 rows). Done here, every worker inherits the answer. A scaler's fit is
# plain numpy: it starts no BLAS or OpenMP thread, which a fork could not take along.
StandardScaler().fit(np.zeros((2, 1)))
