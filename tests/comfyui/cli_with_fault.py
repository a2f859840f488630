"""`python -m qr_core` with a fault at a chosen optimizer step, for the command line's tests under torchrun.

QR_TEST_FAULT="<rank>:<step>:<signal>": the process of that rank sends itself the signal right after its
optimizer step <step>: SIGINT is a user's Ctrl-C (a stop), SIGKILL a process that dies (out of memory, a
failed GPU). Torch's optimizer-step hook times it exactly; nothing else of the run is changed.
"""

import os
import signal
import sys

from torch.optim.optimizer import register_optimizer_step_post_hook

rank, at_step, name = os.environ["QR_TEST_FAULT"].split(":")
if int(os.environ.get("RANK", 0)) == int(rank):
    done = 0

    def fault(optimizer, args, kwargs):
        global done
        done += 1
        if done == int(at_step):
            os.kill(os.getpid(), getattr(signal, name))

    register_optimizer_step_post_hook(fault)

from qr_core.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
