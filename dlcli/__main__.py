"""`python -m dlcli` runs the `dl` command line."""

from dlcli.cli import main

if __name__ == "__main__":
    main()
