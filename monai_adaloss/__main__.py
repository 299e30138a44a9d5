"""``python -m monai_adaloss``: the ``monai-adaloss`` command."""

import sys

from .cli import main

sys.exit(main())
