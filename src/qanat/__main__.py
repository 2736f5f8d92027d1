"""``python -m qanat``: the ``qanat`` command."""

from qanat.cli import main

if __name__ == "__main__":
    main(prog_name="qanat")
