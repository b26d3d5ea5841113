"""`python -m pipeline`: a sanitizing run, or one of the helper commands."""

from __future__ import annotations

import logging
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.getLogger().setLevel(logging.ERROR)  # Beam is chatty at import; our own output is the summary
    command = argv[0] if argv and not argv[0].startswith("-") else None
    if command == "sample":
        from pipeline.sample import main as sample_main

        return sample_main(argv[1:])
    if command == "policy":
        from pipeline.policy_doc import main as policy_main

        return policy_main(argv[1:])
    if command is not None:
        print(f"error: unknown command {command!r} (commands: sample, policy; or options for a run)",
              file=sys.stderr)
        return 2
    from pipeline.run import run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
