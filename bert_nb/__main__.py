"""`python -m bert_nb ...` is the `bert_nb` command; `torchrun --nproc_per_node N -m bert_nb run_classifier ...` too."""
import sys

from bert_nb.cli import main

if __name__ == "__main__":
    sys.exit(main())
