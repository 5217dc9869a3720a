"""``python -m labelwise`` is the ``labelwise`` command."""
from labelwise.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
