"""``python -m HER2RadiomicsLib`` = the ``her2radiomics`` command."""
import sys

from .cli import main

sys.exit(main())
