"""``python -m uclser_tune.search``: the hyperparameter search (``uclser_tune.search.cli``)."""

import sys

from uclser_tune.search.cli import main

if __name__ == "__main__":
    sys.exit(main())
