"""Shared test set-up: headless Qt and a small, deterministic torch."""

import os

# Qt must never try to open a display in tests; set before anything imports Qt.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import torch

# Two cores are shared by the test process and the acquisition threads under test.
torch.set_num_threads(1)
