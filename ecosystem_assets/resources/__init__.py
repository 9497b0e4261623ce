"""One module per outside system, each a `dg.ConfigurableResource`."""
