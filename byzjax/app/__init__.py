"""The application layer: config files -> grids of runs -> result files, figures and the command line."""
