"""Passes over the IR, each a function from graph to graph."""
