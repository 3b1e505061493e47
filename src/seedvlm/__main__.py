"""`python -m seedvlm ...` is the same as the `seedvlm` command (and works under `accelerate launch -m`)."""

from seedvlm.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
