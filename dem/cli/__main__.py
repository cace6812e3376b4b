"""``python -m dem.cli``: the ``dem`` command."""

from dem.cli import main

main()
