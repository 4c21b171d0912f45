"""The one exception type for bad input data."""


class DataError(ValueError):
    """Bad input data. The message is one line: `<file>: <problem>`, so CLIs can print it as is."""

    def __init__(self, path: object, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
