"""accelerate launch, with Lumen's exit codes: python train/launch.py [accelerate launch options] SCRIPT [args]

Takes exactly the arguments of `accelerate launch` and runs accelerate's own launcher in this process
(torch elastic under it, as always); only how a run that ends early is reported differs. accelerate's
launcher answers a worker that exits non-zero, and a Ctrl-C / SIGTERM sent to the launcher itself, with
torch elastic's traceback and exit code 1, whatever the workers said. Here:
  - workers that stopped on a user's mistake (exit code 2, their one-line message printed above) -> 2;
  - Ctrl-C / SIGTERM (to the launcher or to the workers): the workers save a checkpoint and stop -> 3;
  - anything else -> 1, naming the ranks and their exit codes (the workers' own output says why).
On a stop, torch elastic gives the workers TORCH_ELASTIC_SHUTDOWN_TIMEOUT seconds (its default, 30, is raised
here to 600, time enough to write an SD 1.5 ControlNet checkpoint) before it kills them.
"""

from __future__ import annotations

import os
import signal
import sys

from lumen.errors import EXIT_STOPPED, EXIT_USER_ERROR

PROG = "launch.py"


def main(argv=None) -> int:
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    args = launch_command_parser().parse_args(argv)
    os.environ.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "600")
    try:
        launch_command(args)
    except SignalException as err:
        print(f"{PROG}: stopped by {err.sigval.name}; every process saves a checkpoint at the end of its step "
              f"(see above). Run the same command with train.resume_from_checkpoint=latest to continue.",
              file=sys.stderr)
        return EXIT_STOPPED
    except ChildFailedError as err:
        # Once one worker fails, torch elastic ends the others with SIGTERM (exit code -15): they count as
        # following it.
        codes = {failure.exitcode for failure in err.failures.values()} - {-signal.SIGTERM}
        if codes == {EXIT_USER_ERROR}:
            return EXIT_USER_ERROR  # every worker printed the message already
        if codes and codes <= {EXIT_STOPPED, 0}:
            return EXIT_STOPPED
        failed = ", ".join(f"rank {rank}: exit code {failure.exitcode}"
                           for rank, failure in sorted(err.failures.items()))
        print(f"{PROG}: {err.name} failed ({failed}); the processes' own output above says why", file=sys.stderr)
        return 1
    return 0


def cli() -> None:
    """``train/launch.py`` and ``lumen-launch``."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
