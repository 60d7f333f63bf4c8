"""Stand-in apps for the runner's fault tests: one that works, one that hangs, one that crashes.

They follow the app convention (``main(argv)`` with ``-i IN -o OUT``) without models, so the
runner's supervision is tested in seconds; the real apps are exercised end to end elsewhere.
"""
