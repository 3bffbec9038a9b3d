#!/usr/bin/env python
"""Submit one training job across the nodes of a SLURM cluster through submitit (the code is
``yolact_d2/cli/submit.py``; docs/GETTING_STARTED.md, "Several processes or machines").

    python tools/submit.py --shared-folder /shared/$USER/yolact --nodes 2 --gpus-per-node 8 --partition P \\
        --time 4320 --config-file CONFIG OUTPUT_DIR run1
"""
import sys

from yolact_d2.cli.submit import cli_main

if __name__ == "__main__":
    sys.exit(cli_main())
