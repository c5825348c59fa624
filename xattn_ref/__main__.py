import sys

from xattn_ref.cli import main

sys.exit(main())
