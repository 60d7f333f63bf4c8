"""Dies the way native code can: the whole process exits without a word."""

import os


def main(argv: list[str]) -> int:
    os._exit(139)
