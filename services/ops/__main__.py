"""`python -m services.ops ...`: the same as the `mamoru` command."""

from services.ops.cli import main

if __name__ == "__main__":
    main()
