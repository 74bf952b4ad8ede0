"""Test helpers for pyconv: float64 direct-loop references and a gradient checker.

``pyconv.testing.reference`` holds direct sliding-window references that share
no code or algorithm with the compiled core; ``pyconv.testing.gradcheck``
holds a central-difference gradient checker. Both are plain NumPy and are
meant for tests, not for speed.
"""
