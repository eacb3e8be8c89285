"""Errors raised by the ml layer; the services translate them into the API's errors."""


class HyperparameterError(ValueError):
    """A hyperparameter is unknown, refused, or outside what the estimator accepts."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.message = message


class FitError(ValueError):
    """The data cannot be fitted with these settings (too few rows, no core samples, ...)."""


class InferenceInputError(ValueError):
    """The rows posted for inference do not fit the model (wrong width, ...)."""


class TrainingRowsError(ValueError):
    """More training rows than the algorithm takes (its memory grows with their square)."""

    def __init__(self, message: str, *, n_rows: int, limit: int) -> None:
        super().__init__(message)
        self.n_rows = n_rows
        self.limit = limit
