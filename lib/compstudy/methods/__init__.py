"""Pure algorithms, one family per module, each citing the paper section it implements.

Nothing here knows about notebooks, configs, caching or results: the chapter modules under
:mod:`compstudy.studies` orchestrate these algorithms.
"""
