"""Steps: one plain function per verb, ``run_<verb>(inputs..., config) -> <Verb>Result``.

A step owns the file I/O of its verb (opening the cube, reading the catalogue, writing every
product all-or-nothing, provenance); it never imports click.  The commands in
:mod:`ifu_extract.commands` only parse options, build the configuration, call one step and
report its result; ``run`` chains the steps.
"""
