"""``python -m daulat``: the same command as the ``daulat`` script."""

from daulat_console import main

if __name__ == "__main__":
    main()
