"""``python -m cnx2lite`` and the ``cnx2lite`` command: :mod:`cnx2lite.commands`, imported here so that a Ctrl-C
while torch loads ends in one line too."""
import sys


def main() -> None:
    try:
        from .commands import main as run_commands
    except KeyboardInterrupt:
        print("cnx2lite: interrupted while starting", file=sys.stderr)
        sys.exit(130)
    run_commands()


if __name__ == "__main__":
    main()
