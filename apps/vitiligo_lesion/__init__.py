"""Vitiligo close-up: lesion area %, count and colour severity on close-up skin photographs (SEEDS.md, B)."""
