"""``python -m anysat_core``: the ``anysat`` command line (see :mod:`anysat_core.cli`)."""

from anysat_core.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
