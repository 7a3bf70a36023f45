import sys

from tempest.cli import main

sys.exit(main())
