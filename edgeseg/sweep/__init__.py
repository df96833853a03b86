"""`edgeseg sweep`: the models x targets x devices x sizes matrix as cached jobs, run here or on Ray."""
