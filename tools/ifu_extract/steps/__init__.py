"""The step layer: one plain function per verb, ``run_<verb>(inputs..., config) -> Result``.

A step owns the file I/O of its verb (reading inputs, provenance, all-or-nothing writing of
its products through :mod:`._outputs`); it never imports click.  The commands
(:mod:`ifu_extract.commands`) parse options, call one step and report; the pipeline
(:mod:`ifu_extract.pipeline`) calls the steps one after the other.
"""
