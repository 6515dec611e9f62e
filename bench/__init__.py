"""qhook benchmarks: ``python -m bench SCENARIO`` (see bench/__main__.py). Never part of the test suite."""
