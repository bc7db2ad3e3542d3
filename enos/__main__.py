"""``python -m enos`` runs the CLI."""
import sys

from enos.cli import main

sys.exit(main())
