"""``python -m agentfsm.cli``: the ``agentfsm`` command."""

import sys

from agentfsm.cli import main

sys.exit(main())
