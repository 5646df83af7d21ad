"""Experiment B (long) of the paper (arXiv 2602.03329, its experiments), as a batch script.

Same as `byzjax reproduce long`; every option of that command is accepted, e.g.

    python experiments/paper_long.py --seeds 5 --out results/paper_long
    python experiments/paper_long.py --quick --data synthetic
    python experiments/paper_long.py --data /path/to/mnist --steps paper   # the paper's exact step sizes

The grid, the step-size protocol and the outputs are defined in byzjax/reproduce.py.
"""

import sys

from byzjax.app.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "long", *sys.argv[1:]]))
