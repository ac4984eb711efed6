"""`python -m memaudit …` is the `memaudit` command."""
from .entrypoint import main

main()
