"""Renderers: turn a `model.Report` into JSON, terminal output, ... They never compute."""
