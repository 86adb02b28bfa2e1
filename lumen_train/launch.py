"""accelerate launch, with Lumen's exit codes: lumen launch [accelerate launch options] <command> [args]

Takes the arguments of `accelerate launch`, with a ``lumen`` command (run in each process as
``python -m lumen_train <command>``) or a script in place of the training script, and runs accelerate's own
launcher in this process (torch
elastic under it, as always); only how a run that ends early is reported differs. accelerate's launcher answers
a worker that exits non-zero with torch elastic's traceback and exit code 1, and a Ctrl-C / SIGTERM sent to the
launcher with 128 + the signal, whatever the workers did. Here each process records how it ended (exit code and
message, ``lumen.errors.LaunchReport``) and the launcher reports once for all:
  - a user's mistake (every process that ended on its own exited 2): its message, once -> 2;
  - Ctrl-C / SIGTERM (to the launcher or to the workers), and every process saved a checkpoint and stopped -> 3;
  - a stop before every process had saved -> 128 + the signal, naming the processes that did not finish;
  - anything else -> 1, naming the ranks and their exit codes (the processes' own output says why).
On a stop, torch elastic gives the workers TORCH_ELASTIC_SHUTDOWN_TIMEOUT seconds (its default, 30, is raised
here to 600, time enough to write an SD 1.5 ControlNet checkpoint) before it kills them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

from lumen.errors import EXIT_STOPPED, EXIT_USER_ERROR, LAUNCH_REPORTS_ENV

PROG = "lumen launch"


def _run(launch_command, args) -> tuple[Optional[signal.Signals], Optional[dict[int, int]]]:
    """Run accelerate's launcher; returns (the signal that stopped it, None) or (None, exit codes of the
    processes that failed, by rank: empty when the launcher does not say)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    try:
        launch_command(args)
    except SignalException as err:  # accelerate before 1.16 passes torch elastic's own exception on
        return signal.Signals(err.sigval), None
    except KeyboardInterrupt:
        return signal.SIGINT, None
    except SystemExit as exit_:  # accelerate 1.16 exits 128 + the signal once its workers are shut down
        code = exit_.code if isinstance(exit_.code, int) else 1
        if code > 128 and code - 128 in signal.Signals.__members__.values():
            return signal.Signals(code - 128), None
        return None, {} if code else None
    except ChildFailedError as err:
        return None, {rank: failure.exitcode for rank, failure in err.failures.items()}
    except subprocess.CalledProcessError as err:  # one process, started without torch elastic
        return None, {0: err.returncode}
    return None, None


def _read_reports(folder: Path) -> dict[int, dict]:
    """``{rank: {"code": int | None, "message": str | None}}`` of every process that started."""
    reports = {}
    for path in folder.glob("rank-*.json"):
        try:
            reports[int(path.stem.split("-", 1)[1])] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return reports


def _verdict(stopped_by: Optional[signal.Signals], failures: Optional[dict[int, int]], reports: dict[int, dict]) -> int:
    """The exit code of the whole launch, and the lines that explain it."""
    for message in dict.fromkeys(r["message"] for r in reports.values() if r.get("message")):
        print(message, file=sys.stderr)  # a user's mistake, once however many processes met it
    # How each process ended: its own record, else what torch elastic saw (None: killed before it said).
    codes = {rank: report.get("code") for rank, report in reports.items()}
    for rank, code in (failures or {}).items():
        if codes.get(rank) is None:
            codes[rank] = code
    if stopped_by is not None:
        if codes and set(codes.values()) <= {0, EXIT_STOPPED} and EXIT_STOPPED in codes.values():
            print(f"{PROG}: stopped by {stopped_by.name}: every process saved a checkpoint and stopped. Run the same "
                  f"command with train.resume_from_checkpoint=latest to continue.", file=sys.stderr)
            return EXIT_STOPPED
        unfinished = sorted(rank for rank, code in codes.items() if code != EXIT_STOPPED)
        print(f"{PROG}: stopped by {stopped_by.name} before every process had saved a checkpoint (rank(s) "
              f"{', '.join(map(str, unfinished)) or 'unknown'} did not report one); the latest complete checkpoint "
              f"is the one to resume from.", file=sys.stderr)
        return 128 + stopped_by
    if failures is None:
        return 0
    # Once one process fails, torch elastic ends the others with SIGTERM: they count as following it.
    own = {code for code in codes.values() if code not in (None, -signal.SIGTERM)}
    if own == {EXIT_USER_ERROR}:
        return EXIT_USER_ERROR
    if own and own <= {EXIT_STOPPED, 0} and EXIT_STOPPED in own:
        return EXIT_STOPPED
    listed = ", ".join(f"rank {rank}: {'no exit code' if code is None else f'exit code {code}'}"
                       for rank, code in sorted(codes.items())) or "no process reported"
    print(f"{PROG}: the run failed ({listed}); the processes' own output above says why", file=sys.stderr)
    return 1


def accelerate_arguments(argv: list[str]) -> list[str]:
    """``[accelerate options] <command> [args]`` -> accelerate launch's arguments, the command run as the module
    ``lumen_train``; a script path (and anything else) is passed on as accelerate launch takes it."""
    from lumen_train.cli import COMMANDS

    for position, arg in enumerate(argv):
        if arg in COMMANDS and arg != "launch":
            return [*argv[:position], "--module", "lumen_train", *argv[position:]]
    return list(argv)


def main(argv=None) -> int:
    from accelerate.commands.launch import launch_command, launch_command_parser

    argv = list(sys.argv[1:] if argv is None else argv)
    args = launch_command_parser().parse_args(accelerate_arguments(argv))
    # torch elastic logs each process that exits non-zero, and each one it then ends, as it happens; the verdict
    # below says the same once, in Lumen's terms.
    logging.getLogger("torch.distributed.elastic.multiprocessing.api").setLevel(logging.CRITICAL)
    os.environ.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "600")
    previous = os.environ.get(LAUNCH_REPORTS_ENV)
    folder = Path(tempfile.mkdtemp(prefix="lumen-launch-"))
    os.environ[LAUNCH_REPORTS_ENV] = str(folder)  # the workers inherit it
    try:
        stopped_by, failures = _run(launch_command, args)
        reports = _read_reports(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if previous is None:
            os.environ.pop(LAUNCH_REPORTS_ENV, None)
        else:
            os.environ[LAUNCH_REPORTS_ENV] = previous
    return _verdict(stopped_by, failures, reports)
