"""The `taskpass` entry point itself."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# A command that prints far more than a pipe holds, run through the real entry point.
FLOODING = textwrap.dedent(
    """
    import sys
    from taskpass.server.cli import main as cli, policy

    def flood(args):
        for _ in range(200_000):
            print("x" * 100)
        return 0

    policy._check = flood  # main() builds its parser after this
    sys.exit(cli.main(["policy", "check", "unused.yaml"]))
    """
)


def test_a_reader_that_goes_away_ends_the_command_without_a_traceback() -> None:
    # As `taskpass watch ... | head -3`: the reader takes what it wants and closes the pipe.
    with subprocess.Popen(
        [sys.executable, "-c", FLOODING], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as child:
        assert child.stdout is not None and child.stderr is not None
        assert child.stdout.readline() == b"x" * 100 + b"\n"
        child.stdout.close()
        errors = child.stderr.read().decode()
        code = child.wait(timeout=60)

    assert errors == ""
    assert code == 1
