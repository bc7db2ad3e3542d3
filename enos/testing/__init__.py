"""Test support for enos providers: the conformance suite (:mod:`enos.testing.conformance`)."""
