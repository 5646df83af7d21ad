"""Experiment A (short) of the paper (arXiv 2602.03329, its experiments), as a batch script.

Same as `byzjax reproduce short`; every option of that command is accepted, e.g.

    python experiments/paper_short.py --seeds 5 --out results/paper_short
    python experiments/paper_short.py --quick --data synthetic
    python experiments/paper_short.py --data /path/to/mnist --steps paper   # the paper's exact step sizes

The grid, the step-size protocol and the outputs are defined in byzjax/reproduce.py.
"""

import sys

from byzjax.app.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "short", *sys.argv[1:]]))
