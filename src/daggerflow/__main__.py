"""``python -m daggerflow ...``: the same command line as ``daggerflow ...``."""

from .cli import main

if __name__ == "__main__":
    main()
