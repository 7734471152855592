"""`python -m npvae.cli`: the npvae command."""

import sys

from . import main

sys.exit(main())
