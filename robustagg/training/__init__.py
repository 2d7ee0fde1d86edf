"""The tiny built-in federated-learning trainer (NumPy only)."""
