"""A toy avits search method, installed only by the tests."""
