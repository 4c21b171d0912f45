"""What the seeded benchmarks share: mean ± std table cells, and their results written as JSON and
markdown side by side in `benchmarks/results/`, each file atomically."""
import json
import os

import numpy as np

from data_pipeline.atomic import write_text

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def mean_std(values: list[float], fmt: str) -> str:
    """`mean ± std` over seeds (sample std), or the one value."""
    values = np.asarray(values, np.float64)
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(values.mean(), fmt)} ± {format(values.std(ddof=1), fmt)}"


def write_results(name: str, report: dict, markdown: str) -> None:
    """`benchmarks/results/<name>.{json,md}`; the markdown is printed too."""
    write_text(os.path.join(RESULTS, f"{name}.json"), json.dumps(report, indent=1))
    write_text(os.path.join(RESULTS, f"{name}.md"), markdown)
    print(markdown)
