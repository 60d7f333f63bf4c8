import sys

from apps.facial_vitiligo.app import main

sys.exit(main())
