import sys

from apps.skin_prick.app import main

sys.exit(main())
