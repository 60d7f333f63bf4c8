"""Never finishes: the runner must time it out and stay responsive."""

import time


def main(argv: list[str]) -> int:
    while True:
        time.sleep(1)
