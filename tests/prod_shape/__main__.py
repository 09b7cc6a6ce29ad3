"""``python -m prod_shape`` (from ``tests/``): what ``scripts/prod-shape`` runs."""

import sys

from prod_shape.stack import main

sys.exit(main())
