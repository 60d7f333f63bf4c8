import sys

from apps.scalp.app import main

sys.exit(main())
