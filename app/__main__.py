"""``python -m app``: Lloyd's command line (``serve``, the default; ``migrate``, ``check``,
``new-key``, ``hash-key``; see ``app.cli``)."""

import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main())
