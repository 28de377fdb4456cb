"""``torchrun --nproc-per-node N -m astroingest_trainer --config train.toml``."""

import sys

from astroingest_trainer._command import main

sys.exit(main())
