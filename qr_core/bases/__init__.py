"""Bases: each target weight decomposed once (SVD, then QR) into an orthonormal Q, fingerprinted and cached on disk."""
