"""Entry point of ``python -m turboloop`` (see turboloop._runner)."""

import sys

from turboloop._runner import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
