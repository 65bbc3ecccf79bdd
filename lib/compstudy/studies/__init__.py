"""One module per chapter notebook: for now its typed config, later its orchestration.

The registry is the naming rule: notebook ``NN_<name>`` has its config in
``compstudy.studies.<name>`` as the class ``Config`` (see ``config.config_class``), so the
runner finds it without executing the notebook. No table of names lives here on purpose:
every notebook imports this package, so editing such a table would change every run key.
"""
