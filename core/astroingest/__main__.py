import sys

from astroingest.cli import main

sys.exit(main())
