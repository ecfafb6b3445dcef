"""HTML helpers only the extract stage uses: faster, output-identical stand-ins for trafilatura's hottest XPath
selectors and its parser's element-class lookup (`speedups.py`), and resiliparse's extractor (`engines.py`)."""
