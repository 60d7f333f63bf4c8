"""Skin prick test: wheal and erythema per prick site (SEEDS.md, section C)."""
