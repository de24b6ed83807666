"""The one configuration schema (``params.yaml``), shared by the command line, the flows, the
tasks and the DVC stages: ``config.params`` (typed sections, validation, ``load_params``)."""
