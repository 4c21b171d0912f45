"""The paper's Table 1 (`python -m benchmarks.table1`; what it does: `__main__`'s docstring).

The pieces: `plan` (methods, data sets, schedules, each run's `Config`), `estimate` (the runtime
estimate), `scoring` (evaluation inputs, scores, baselines, split statistics), `report` (scores
over seeds, targets, the table), `run` (the units, through `benchmarks.units`), `__main__` (the
flags).
"""
