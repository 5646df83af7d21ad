"""The authors' revised protocol (arXiv 2602.03329, the experiments of its revision), as a batch script.

Same as `byzjax reproduce revision`; every option of that command is accepted, e.g.

    python experiments/paper_revision.py --out results/paper_revision            # 5 seeds, the whole grid
    python experiments/paper_revision.py --quick --data synthetic               # a tiny version for a first try
    python experiments/paper_revision.py --data /path/to/mnist --seeds 1        # the authors' data, one seed

The protocol (stages, grids, selection) and the outputs are defined in byzjax/app/revision.py.
"""

import sys

from byzjax.app.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "revision", *sys.argv[1:]]))
