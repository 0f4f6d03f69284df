"""``python -m agentfsm.cli``: the ``agentfsm`` command."""

import sys

from agentfsm.cli import main, without_start_directory

without_start_directory()
sys.exit(main())
