"""``python -m tests.support.reliability``: the repeat runner (``cli``)."""
import sys

from tests.support.reliability.cli import main

sys.exit(main())
