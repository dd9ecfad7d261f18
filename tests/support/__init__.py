"""What tests and bench/ share: harnesses, fakes, broker and service helpers (test modules never import
each other)."""
