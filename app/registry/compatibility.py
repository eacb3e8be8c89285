"""Library drift: whether an artifact was written by the scikit-learn and numpy running here."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import sklearn

from app.errors import VersionDrift

# What decides whether an artifact written elsewhere may be unpickled here:
# - scikit-learn, to the exact version: it supports unpickling a model only under the version
#   that pickled it (any other, a patch release included, draws InconsistentVersionWarning),
#   because estimators' private attributes and Cython tree structures change between releases
#   and a model that unpickles may still compute something else.
# - numpy, by major version only: within a major version numpy keeps its pickle format stable,
#   while numpy 2 moved `numpy.core` to `numpy._core`, so numpy 2 pickles fail under numpy 1.
# scipy, joblib and Python are recorded but not compared: a fitted model holds numpy arrays and
# scikit-learn objects, not scipy ones, and joblib and pickle protocol 5 read older files.
SCIKIT_LEARN = "scikit-learn"
NUMPY = "numpy"
SETTING = "LLOYD_ALLOW_VERSION_DRIFT"
UNKNOWN = "unknown"


def running_versions() -> dict[str, str]:
    """The compared libraries as this process runs them."""
    return {SCIKIT_LEARN: sklearn.__version__, NUMPY: np.__version__}


RUNNING = running_versions()


def compared_versions(recorded: Mapping[str, str]) -> dict[str, str]:
    """The compared libraries of a version's record (``unknown`` where none was recorded)."""
    return {name: str(recorded.get(name, UNKNOWN)) for name in RUNNING}


def _major(version: str) -> str:
    return version.split(".", 1)[0]


def has_drifted(recorded: Mapping[str, str], running: Mapping[str, str] = RUNNING) -> bool:
    """True when ``recorded`` names another scikit-learn, or another numpy major version, than
    ``running``. A record that lacks either cannot be vouched for, so it counts as drifted."""
    other_scikit_learn = recorded.get(SCIKIT_LEARN) != running[SCIKIT_LEARN]
    other_numpy = _major(str(recorded.get(NUMPY, UNKNOWN))) != _major(running[NUMPY])
    return other_scikit_learn or other_numpy


def drift_error(
    label: str, recorded: Mapping[str, str], *, cause: str | None = None
) -> VersionDrift:
    """The refusal to load ``label``'s artifact; ``cause`` when loading was allowed and failed."""
    trained, running = compared_versions(recorded), dict(RUNNING)
    written = f"scikit-learn {trained[SCIKIT_LEARN]} (numpy {trained[NUMPY]})"
    here = f"scikit-learn {running[SCIKIT_LEARN]} (numpy {running[NUMPY]})"
    if cause is None:
        detail = (
            f"the artifact of {label} was written by {written} and this server runs {here}; "
            "scikit-learn does not support loading a model across versions, so it is not "
            f"loaded: retrain it, serve it from a server running scikit-learn "
            f"{trained[SCIKIT_LEARN]}, or set {SETTING}=true to load it anyway"
        )
    else:
        detail = (
            f"the artifact of {label} was written by {written}; {SETTING} allowed loading it "
            f"under {here}, but that failed ({cause}): retrain it, or serve it from a server "
            f"running scikit-learn {trained[SCIKIT_LEARN]}"
        )
    return VersionDrift(detail, extra={"trained_with": trained, "running": running})
