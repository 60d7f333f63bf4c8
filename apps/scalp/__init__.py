"""Scalp: six indicators x four grades from scalp close-ups (SEEDS.md, section D)."""
