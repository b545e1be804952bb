"""Adaptive-SN2N: twins, risk-aware normalization, U-Net, training, tiling, packages."""
