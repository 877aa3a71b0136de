"""Steps: one plain function per verb, ``run_<verb>(inputs..., config) -> <Verb>Result``.

A step owns the file I/O of its verb (opening the inputs, writing the products with their
provenance, all or nothing); the click commands only parse options, call one step and report.
"""
