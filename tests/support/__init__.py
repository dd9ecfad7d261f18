"""Harnesses, fakes and checkers shared by the tests and bench/."""
