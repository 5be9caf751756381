"""Pure NetworkPolicy semantics: typed objects, selectors and the oracle. No I/O."""
