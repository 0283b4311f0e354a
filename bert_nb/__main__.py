"""`python -m bert_nb ...` runs the `bert_nb` command; so does `torchrun --nproc_per_node N -m bert_nb run_classifier ...`."""
import sys

from bert_nb.cli import main

if __name__ == "__main__":
    sys.exit(main())
