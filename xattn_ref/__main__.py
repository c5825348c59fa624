import sys

from xattn_ref.cli import main

if __name__ == "__main__":
    sys.exit(main())
