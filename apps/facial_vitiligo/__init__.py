"""Facial vitiligo: F-Vitiligo per view from facial photographs (SEEDS.md, section A)."""
