"""A gadget module whose import raises SystemExit (tests/test_survive_gadgets.py)."""

raise SystemExit(7)
