"""Facial vitiligo task: DDRNet-23-slim on the face ROI (train, evaluate, inference, data, generators)."""
