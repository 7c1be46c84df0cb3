import sys

from clearct.cli import main

sys.exit(main())
