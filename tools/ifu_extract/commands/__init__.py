"""Click commands, one module per verb; each parses, calls the library and reports."""
