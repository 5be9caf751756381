"""Helpers shared by test modules (builders, strategies, lab drivers). Test modules
import from here and never from one another; fixtures stay in the conftest files."""
