import sys

from apps.vitiligo_lesion.app import main

sys.exit(main())
