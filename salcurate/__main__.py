"""``python -m salcurate``: the command line (what ``torchrun -m salcurate retrain ...`` starts)."""

from salcurate.cli import main

if __name__ == "__main__":
    main()
