import sys

from taxosmooth.cli import main

sys.exit(main())
